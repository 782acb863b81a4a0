"""CSV exports that are safe to open in a spreadsheet.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a
formula by Excel, LibreOffice and Google Sheets (CSV injection: a file name or a note such as
``=HYPERLINK(...)`` runs when a colleague opens the export). Every text cell the project
exports goes through :func:`safe_csv`, which prefixes such cells with an apostrophe, the
OWASP mitigation spreadsheets show as the plain text. Cells that already start with an
apostrophe get one more, so :func:`restore_cells` recovers every original text exactly.
Numbers stay numbers: ``-3.2`` in a numeric column is a value, not a formula.
"""

from __future__ import annotations

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"


def _neutralise(text: str) -> str:
    return ESCAPE + text if text.startswith((*FORMULA_STARTS, ESCAPE)) else text


def _restore(text: str) -> str:
    return text[1:] if text.startswith(ESCAPE) else text


def _text_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]


def neutralise_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells (and column names) cannot start a spreadsheet formula."""
    out = frame.copy()
    for col in _text_columns(out):
        out[col] = out[col].map(lambda v: _neutralise(v) if isinstance(v, str) else v)
    return out.rename(columns=lambda c: _neutralise(c) if isinstance(c, str) else c)


def restore_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Undo :func:`neutralise_cells` on a table read back from a safe CSV."""
    out = frame.rename(columns=lambda c: _restore(c) if isinstance(c, str) else c)
    for col in _text_columns(out):
        out[col] = out[col].map(lambda v: _restore(v) if isinstance(v, str) else v)
    return out


def safe_csv(frame: pd.DataFrame, **kwargs) -> str:
    """``frame.to_csv`` with formula-starting text neutralised (``index=False`` by default)."""
    kwargs.setdefault("index", False)
    return neutralise_cells(frame).to_csv(**kwargs)
