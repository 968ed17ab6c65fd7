"""Checks that committed notebooks stay small, clean and free of saved widget state."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WIDGET_MIME_TYPES = ("application/vnd.jupyter.widget-state+json", "application/vnd.jupyter.widget-view+json")
MAX_NOTEBOOK_BYTES = 300_000


def tracked_notebooks() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.ipynb"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    return sorted(ROOT / name for name in listed if not Path(name).name.startswith("_"))


NOTEBOOKS = tracked_notebooks()


def test_notebooks_found():
    names = {path.relative_to(ROOT).as_posix() for path in NOTEBOOKS}
    assert "index.ipynb" in names
    assert "nbs/index.ipynb" in names
    assert any(name.startswith("nbs/lessons/") for name in names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_notebook_clean(path: Path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert "widgets" not in notebook.get("metadata", {}), f"{path} stores widget state in metadata.widgets"
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            for mime in WIDGET_MIME_TYPES:
                assert mime not in data, f"{path} has a saved widget output ({mime}); clear it and rerun nbdev-clean"
    assert path.stat().st_size <= MAX_NOTEBOOK_BYTES, f"{path} is {path.stat().st_size} bytes; keep outputs small"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_notebook_has_no_execution_noise(path: Path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("execution_count") is None, f"{path} keeps execution counts; run nbdev-clean"
