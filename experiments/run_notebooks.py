"""Execute the notebooks in place, outputs included (``make notebooks``).

Each notebook under ``notebooks/`` (or those named) runs top to bottom in a fresh ``python3`` kernel
whose working directory is ``notebooks/``, and is written back with its outputs, so that the committed
notebooks open on real figures. The kernel inherits the environment: ``CI`` set gives the smoke runs,
``PPL_SCENES_TRAIN_FROM_SCRATCH=1`` trains instead of loading the pretrained models. A notebook that
raises is left unwritten and the script exits with status 1, naming it.

::

    python experiments/run_notebooks.py                     # all of notebooks/
    python experiments/run_notebooks.py notebooks/05_saccades.ipynb
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(path: Path, timeout: int = 3600) -> nbformat.NotebookNode:
    """``path``'s notebook executed in a fresh kernel (working directory: its folder), not written."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # no timestamps in the cells' metadata: re-runs diff on the outputs alone
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="notebooks to run (default: all of notebooks/)"
    )
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    os.environ.setdefault("MPLBACKEND", "Agg")  # the kernel's own %matplotlib inline still draws inline
    failed = []
    for path in paths:
        start = time.perf_counter()
        try:
            notebook = execute(path, args.timeout)
        except CellExecutionError as err:
            print(f"{path.name}: FAILED\n{err}", file=sys.stderr)
            failed.append(path.name)
            continue
        nbformat.write(notebook, path)
        size = path.stat().st_size / 1024
        print(f"{path.name}: ran in {time.perf_counter() - start:.0f} s, {size:.0f} KB written", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
