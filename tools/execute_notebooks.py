"""Execute notebooks in a Jupyter kernel in quick mode and save their outputs for readers.

Outputs that cannot be kept in the repository are dropped: saved widget state (metadata.widgets) and
widget-view outputs, which only render with a live kernel. Run `nbdev-clean` afterwards.

Usage: python tools/execute_notebooks.py NOTEBOOK [NOTEBOOK ...] [--full] [--timeout SECONDS]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def strip_widget_outputs(notebook: nbformat.NotebookNode) -> int:
    """Remove saved widget state and widget-view outputs in place; return how many outputs were changed."""
    notebook.metadata.pop("widgets", None)
    changed = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                del data[WIDGET_VIEW]
                changed += 1
        if cell.get("outputs"):
            cell["outputs"] = [o for o in cell["outputs"] if o.get("output_type") == "stream" or o.get("data") or
                               o.get("output_type") == "error"]
    return changed


def execute(path: Path, full: bool, timeout: int) -> float:
    """Execute one notebook in place with its folder as the working directory; return the seconds taken."""
    notebook = nbformat.read(path, as_version=4)
    os.environ["TRANSFER_KIT_QUICK"] = "0" if full else "1"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    start = time.perf_counter()
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    strip_widget_outputs(notebook)
    nbformat.write(notebook, path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path, help="notebooks to execute and save in place")
    parser.add_argument("--full", action="store_true", help="run in full mode (TRANSFER_KIT_QUICK=0)")
    parser.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds (default 3600)")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if not path.is_file():
            parser.error(f"notebook not found: {path}")
        seconds = execute(path.resolve(), args.full, args.timeout)
        print(f"{path}: executed in {seconds:.0f} s ({'full' if args.full else 'quick'} mode)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
