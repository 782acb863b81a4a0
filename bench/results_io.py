"""Writing a bench's result markdown (``bench/results/NAME.md``), shared by the benches.

The benches are run as ``python bench/NAME.py``, so this folder is on ``sys.path`` and they
import this module as plain ``import results_io``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def write_result(path: Path, text: str) -> None:
    """Write ``text`` and one closing newline to ``path``, making its folder if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def publish_result(path: Path, lines: Iterable[str]) -> None:
    """Print a result's lines, joined by newlines, then write them to ``path``.

    The file holds what was printed plus one closing newline (:func:`write_result`).
    """
    text = "\n".join(lines)
    print(text)
    write_result(path, text)
