"""A reviewer's verdicts on a run's samples: ``RUN/annotations.csv``.

A clinician marks a sample "agree", "disagree" or "unsure" (with the detector's verdict) and
may add a short note; each mark is a row with the time and the reviewer's name. The file is
rewritten atomically on every mark, so a crash never leaves a torn table; the latest mark of
a sample is its current review, the earlier ones stay as its history.
"""

from __future__ import annotations

import fcntl
from datetime import datetime, timezone

import pandas as pd

from nero.files import write_text
from nero.run.directory import Run

ANNOTATIONS_FILE = "annotations.csv"
LOCK_FILE = ".annotations.lock"
REVIEWS = ("agree", "disagree", "unsure")
COLUMNS = ["index", "path", "review", "note", "reviewer", "time"]
MAX_NOTE = 500  # characters: a note, not a report


def read_annotations(run: Run) -> pd.DataFrame:
    """Every mark ever made (empty table when there is none), oldest first."""
    path = run.path / ANNOTATIONS_FILE
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    try:
        table = pd.read_csv(path, keep_default_na=False, dtype={"note": str, "reviewer": str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path} is not a readable annotations table ({exc})") from exc
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}")
    return table[COLUMNS]


def current_reviews(run: Run) -> pd.DataFrame:
    """The latest mark of each reviewed sample, indexed by sample index."""
    table = read_annotations(run)
    return table.drop_duplicates("index", keep="last").set_index("index")


def annotate(run: Run, index: int, review: str, note: str = "", reviewer: str = "") -> None:
    """Add one mark (the sample's review is now this one)."""
    if review not in REVIEWS:
        raise ValueError(f"review must be one of {REVIEWS}, got {review!r}")
    if not 0 <= int(index) < len(run.samples):
        raise ValueError(f"sample {index} is outside 0..{len(run.samples) - 1}")
    note = " ".join(str(note).split())[:MAX_NOTE]
    row = {
        "index": int(index),
        "path": str(run.samples["path"].iat[int(index)]),
        "review": review,
        "note": note,
        "reviewer": " ".join(str(reviewer).split())[:80],
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # Two reviewers marking at once: one read-modify-write at a time, so no mark is lost.
    with open(run.path / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = pd.concat([read_annotations(run), pd.DataFrame([row])], ignore_index=True)
        write_text(run.path / ANNOTATIONS_FILE, table.to_csv(index=False))
