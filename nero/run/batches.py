"""A run's scored batches (``RUN/batches/NAME/``): their names, tables and descriptions.

Reading only, and no torch: the dashboard lists batches on pages that never run the model.
Writing a batch is :mod:`nero.run.new_data`'s job.
"""

from __future__ import annotations

import json

import pandas as pd

from nero.run.directory import Run
from nero.tables import restore_cells

BATCHES_DIR = "batches"
MAX_BATCH_NAME = 100  # a folder name, with room for the staging prefix and suffix
BATCH_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."


def check_batch_name(run: Run, name: str) -> None:
    """Refuse a name that is not a plain folder name, or one the run already has."""
    if not name or any(c not in BATCH_NAME_CHARS for c in name) or name.startswith("."):
        raise ValueError(
            f"batch name {name!r}: use letters, digits, '-', '_' or '.', not starting with '.'"
        )
    if len(name) > MAX_BATCH_NAME:
        raise ValueError(f"batch name {name[:24]!r}… is {len(name)} characters; at most "
                         f"{MAX_BATCH_NAME}")  # fmt: skip
    if (run.path / BATCHES_DIR / name).exists():
        raise ValueError(f"the run already has a batch named {name!r}; choose another name")


def run_batches(run: Run) -> list[str]:
    """Names of the run's scored batches, oldest first."""
    folder = run.path / BATCHES_DIR
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.iterdir() if (p / "batch.json").is_file() and not p.name.startswith(".")
    ]
    return [
        p.name
        for p in sorted(found, key=lambda p: json.loads((p / "batch.json").read_text())["created"])
    ]


def batch_info(run: Run, name: str) -> dict:
    """A batch's ``batch.json``: when, how many, by which method's thresholds."""
    path = run.path / BATCHES_DIR / name / "batch.json"
    if not path.is_file():
        raise ValueError(f"the run has no batch named {name!r} (batches: {run_batches(run)})")
    return json.loads(path.read_text())


def read_batch(run: Run, name: str) -> pd.DataFrame:
    """One batch's table (path, predicted, confidence, scores, verdict, percentile)."""
    path = run.path / BATCHES_DIR / name / "scores.csv"
    if not path.is_file():
        raise ValueError(f"the run has no batch named {name!r} (batches: {run_batches(run)})")
    return restore_cells(pd.read_csv(path, keep_default_na=False))
