"""Reviewers' marks on a run's samples: an append-only history in ``RUN/reviews.sqlite``.

A clinician marks a sample "agree", "disagree" or "unsure" with the verdict shown, may add
free tags and a short note, and the mark records who (and how they were known), when, and
what they agreed with: the method, its score, the verdict and the cut-offs. Marks are never
changed or deleted (triggers refuse it); a sample's current review is its latest mark.

SQLite in WAL mode, one row per mark, one transaction per save: several reviewers (processes)
write at once without losing a mark, readers never block writers, and a crash leaves either
the whole mark or none. A mark names its image by path, so the history survives a re-evaluated
run (``nero evaluate --overwrite`` carries it over) even when sample indices change.

The run's old ``annotations.csv`` (the previous store) is imported once, in the first write
transaction, and left in place untouched. Exports are CSV (:func:`reviews_csv`), never the store.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from nero.run.directory import Run
from nero.tables import safe_csv

REVIEWS_FILE = "reviews.sqlite"
LEGACY_FILE = "annotations.csv"
REVIEWS = ("agree", "disagree", "unsure")
IDENTITIES = ("oidc", "local", "unverified", "imported")
MAX_NOTE = 500  # characters: a note, not a report
MAX_TAGS, MAX_TAG = 8, 40
LOCK_WAIT_S = 30.0  # how long a save waits for another reviewer's transaction
SCHEMA_VERSION = 1
COLUMNS = [
    "mark", "index", "path", "review", "tags", "note", "reviewer", "identity", "time",
    "method", "score", "verdict", "cutoffs", "run",
]  # fmt: skip
_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS marks (
        mark INTEGER PRIMARY KEY AUTOINCREMENT,
        sample INTEGER NOT NULL,
        path TEXT NOT NULL,
        review TEXT NOT NULL CHECK (review IN {REVIEWS}),
        tags TEXT NOT NULL DEFAULT '',
        note TEXT NOT NULL DEFAULT '',
        reviewer TEXT NOT NULL,
        identity TEXT NOT NULL CHECK (identity IN {IDENTITIES}),
        time TEXT NOT NULL,
        method TEXT NOT NULL DEFAULT '',
        score REAL,
        verdict TEXT NOT NULL DEFAULT '',
        cutoffs TEXT NOT NULL DEFAULT '',
        run TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS marks_path ON marks (path)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    *(
        f"CREATE TRIGGER IF NOT EXISTS marks_are_kept_on_{event.lower()} BEFORE {event} ON marks "
        "BEGIN SELECT RAISE(ABORT, 'the review history is append-only'); END"
        for event in ("UPDATE", "DELETE")
    ),
)
_INSERT = (
    "INSERT INTO marks (sample, path, review, tags, note, reviewer, identity, time, method, "
    "score, verdict, cutoffs, run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class ReviewStoreError(ValueError):
    """The review database cannot be read or written; the message names it and what to do."""


@dataclass(frozen=True)
class Mark:
    """One reviewer's mark on one sample, with the verdict it agreed or disagreed with."""

    index: int
    review: str
    reviewer: str
    identity: str = "local"  # how the reviewer was known: see IDENTITIES
    note: str = ""
    tags: tuple[str, ...] = ()
    method: str = ""
    score: float | None = None
    verdict: str = ""
    cutoffs: str = ""  # the thresholds shown, e.g. "borderline 14.28, OOD 17.1"


def _one_line(text: object, limit: int) -> str:
    return " ".join(str(text).split())[:limit]


def clean_tags(tags: Sequence[str] | str) -> tuple[str, ...]:
    """Free tags as the store keeps them: lower case, no commas, at most MAX_TAGS, unique."""
    if isinstance(tags, str):
        tags = tags.split(",")
    cleaned = (_one_line(t, MAX_TAG).strip().lower().replace(",", " ") for t in tags)
    return tuple(dict.fromkeys(t for t in cleaned if t))[:MAX_TAGS]


def _row(run: Run, mark: Mark, time: str) -> tuple:
    if mark.review not in REVIEWS:
        raise ValueError(f"review must be one of {REVIEWS}, got {mark.review!r}")
    if mark.identity not in IDENTITIES:
        raise ValueError(f"identity must be one of {IDENTITIES}, got {mark.identity!r}")
    index = int(mark.index)
    if not 0 <= index < len(run.samples):
        raise ValueError(f"sample {mark.index} is outside 0..{len(run.samples) - 1}")
    reviewer = _one_line(mark.reviewer, 120)
    if not reviewer:
        raise ValueError("a mark needs the reviewer's name")
    score = None if mark.score is None else float(mark.score)
    if score is not None and not np.isfinite(score):
        raise ValueError(f"the score of a mark must be finite, got {mark.score!r}")
    return (
        index,
        str(run.samples["path"].iat[index]),
        mark.review,
        ",".join(clean_tags(mark.tags)),
        str(mark.note).strip()[:MAX_NOTE],  # a note keeps its lines
        reviewer,
        mark.identity,
        time,
        _one_line(mark.method, 80),
        score,
        _one_line(mark.verdict, 40),
        _one_line(mark.cutoffs, 200),
        str(run.manifest.get("created", "")),
    )


def _failure(path: Path, exc: sqlite3.Error) -> ReviewStoreError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return ReviewStoreError(
            f"{path} is held by another process for over {LOCK_WAIT_S:.0f} s; nothing was "
            "saved, try again in a moment"
        )
    return ReviewStoreError(
        f"{path} is not a readable review database ({text}); the run's other files are "
        "untouched. Move the file aside (its marks stay in it) to start a new one."
    )


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection in autocommit mode (transactions are explicit), WAL, durable commits."""
    try:
        with closing(sqlite3.connect(path, timeout=LOCK_WAIT_S, isolation_level=None)) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")  # a saved mark survives a power cut
            yield con
    except sqlite3.Error as exc:
        raise _failure(path, exc) from exc


def _legacy_marks(run: Run) -> pd.DataFrame:
    """The rows of the old ``annotations.csv`` in the store's columns (empty when none)."""
    path = run.path / LEGACY_FILE
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    try:
        old = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ReviewStoreError(
            f"{path} (the run's earlier reviews) cannot be read ({exc}); nothing was saved. "
            "Repair or move it aside; the review database imports it on the next save."
        ) from exc
    missing = [c for c in ("index", "path", "review") if c not in old.columns]
    if missing or not old["review"].isin(REVIEWS).all():
        raise ReviewStoreError(f"{path} lacks columns {missing} or holds unknown reviews")
    return pd.DataFrame(
        {
            "mark": np.arange(1, len(old) + 1),
            "index": pd.to_numeric(old["index"]).astype(int),
            "path": old["path"],
            "review": old["review"],
            "tags": "",
            "note": old.get("note", ""),
            "reviewer": old.get("reviewer", "").replace("", "unknown"),
            "identity": "imported",
            "time": old.get("time", ""),
            "method": "",
            "score": np.nan,
            "verdict": "",
            "cutoffs": "",
            "run": "",
        },
        columns=COLUMNS,
    )


def _import_legacy(con: sqlite3.Connection, run: Run) -> None:
    """Copy ``annotations.csv`` into the store once (its sha256 is remembered)."""
    path = run.path / LEGACY_FILE
    if not path.is_file() or con.execute("SELECT 1 FROM meta WHERE key='legacy'").fetchone():
        return
    old = _legacy_marks(run)
    old = old.drop(columns="mark").astype(object).assign(score=None)
    con.executemany(_INSERT, old.itertuples(index=False, name=None))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    con.execute("INSERT INTO meta VALUES ('legacy', ?)", (f"{LEGACY_FILE} sha256 {digest}",))


def add_marks(run: Run, marks: Sequence[Mark]) -> int:
    """Append ``marks`` in one transaction (all or none); returns how many were saved."""
    if not marks:
        return 0
    path = run.path / REVIEWS_FILE
    with _connect(path) as con:
        con.execute("BEGIN IMMEDIATE")  # one writer at a time; others wait up to LOCK_WAIT_S
        try:
            for statement in _SCHEMA:
                con.execute(statement)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            _import_legacy(con, run)
            # The time is read inside the lock: the history's order is the order of its times.
            time = datetime.now(timezone.utc).isoformat(timespec="microseconds")
            rows = [_row(run, m, time) for m in marks]
            con.executemany(_INSERT, rows)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return len(rows)


def review_history(run: Run) -> pd.DataFrame:
    """Every mark ever made on the run, oldest first; ``index`` is the sample's row in this
    run (-1 for an image the run no longer holds, after a re-evaluation)."""
    path = run.path / REVIEWS_FILE
    if not path.is_file():
        table = _legacy_marks(run)
    else:
        with _connect(path) as con:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE name='marks'").fetchone():
                table = pd.DataFrame(columns=COLUMNS)
            else:
                table = pd.read_sql_query(
                    "SELECT mark, sample AS 'index', path, review, tags, note, reviewer, "
                    "identity, time, method, score, verdict, cutoffs, run FROM marks ORDER BY mark",
                    con,
                )
    return table.assign(index=_current_index(run, table))[COLUMNS]


def _current_index(run: Run, table: pd.DataFrame) -> np.ndarray:
    """Each mark's sample row in this run: its recorded row if the path still matches, else
    the row of its path, else -1."""
    paths = run.samples["path"].astype(str).to_numpy()
    recorded = pd.to_numeric(table["index"]).to_numpy(np.int64)
    marked = table["path"].astype(str).to_numpy()
    inside = (recorded >= 0) & (recorded < paths.size)
    same = np.zeros(len(table), bool)
    same[inside] = paths[recorded[inside]] == marked[inside]
    by_path = pd.Series(np.arange(paths.size)).groupby(paths).first()
    looked_up = pd.Series(marked).map(by_path).fillna(-1).to_numpy(np.int64)
    return np.where(same, recorded, looked_up)


def current_reviews(run: Run) -> pd.DataFrame:
    """The latest mark of each reviewed sample of this run, indexed by sample index."""
    history = review_history(run)
    history = history[history["index"] >= 0]
    return history.drop_duplicates("index", keep="last").set_index("index")


def reviews_csv(run: Run) -> str:
    """The whole review history as a spreadsheet-safe CSV (the store stays the database)."""
    return safe_csv(review_history(run), float_format="%.9g")


def _last_mark(con: sqlite3.Connection) -> int:
    if not con.execute("SELECT 1 FROM sqlite_master WHERE name='marks'").fetchone():
        return 0
    return int(con.execute("SELECT coalesce(max(mark), 0) FROM marks").fetchone()[0])


def carry_reviews(old_run: Path, new_run: Path) -> int:
    """Copy a run's review store (and its old CSV) into the run that replaces it; returns the
    last mark carried. SQLite's online backup: a consistent copy while others write."""
    if (old_run / LEGACY_FILE).is_file():
        shutil.copy2(old_run / LEGACY_FILE, new_run / LEGACY_FILE)
    if not (old_run / REVIEWS_FILE).is_file():
        return 0
    with _connect(old_run / REVIEWS_FILE) as src, _connect(new_run / REVIEWS_FILE) as dst:
        src.backup(dst)
        return _last_mark(dst)


def keep_late_reviews(old_run: Path, new_run: Path, carried: int) -> int:
    """Append marks saved into the replaced run after :func:`carry_reviews` copied it (a
    reviewer's save racing the swap); returns how many."""
    if not (old_run / REVIEWS_FILE).is_file():
        return 0
    with _connect(old_run / REVIEWS_FILE) as src:
        late = src.execute(
            "SELECT sample, path, review, tags, note, reviewer, identity, time, method, score, "
            "verdict, cutoffs, run FROM marks WHERE mark > ? ORDER BY mark",
            (carried,),
        ).fetchall()
    if late:
        with _connect(new_run / REVIEWS_FILE) as dst:
            dst.execute("BEGIN IMMEDIATE")
            dst.executemany(_INSERT, late)
            dst.execute("COMMIT")
    return len(late)
