"""Run nbval's output checks on notebooks that nbdev-clean has stripped of execution counts.

nbval treats a cell that has outputs but no execution count as an unrun cell and fails it, while nbdev-clean
clears every execution count. This script writes a sibling copy of each notebook with execution counts filled
in, named `_nbval_NAME.ipynb` so that nbdev skips it. It runs `pytest --nbval-lax` on the copies from the same
folders, so relative paths and settings.ini lookups behave as in the originals, then deletes the copies.
In lax mode only cells tagged `nbval-check-output` have their outputs compared; every cell must still run.

Usage: python tools/run_nbval.py NOTEBOOK [NOTEBOOK ...] [-- PYTEST_ARGS ...]
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

PREFIX = "_nbval_"


def write_copy(path: Path) -> Path:
    """Write the numbered copy of `path` next to it and return its path."""
    notebook = nbformat.read(path, as_version=4)
    count = 0
    for cell in notebook.cells:
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
    copy = path.with_name(PREFIX + path.name)
    nbformat.write(notebook, copy)
    return copy


def main(argv: list[str]) -> int:
    paths, pytest_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        print(f"Notebook(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    copies = [write_copy(Path(p)) for p in paths]
    try:
        command = [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", *pytest_args,
                   *map(str, copies)]
        return subprocess.run(command).returncode
    finally:
        for copy in copies:
            copy.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
