"""The review store: append-only marks in SQLite, the old CSV imported once, safe exports."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest

from nero.run import reviews
from nero.run.directory import Run
from nero.run.reviews import Mark, ReviewStoreError, add_marks, current_reviews, review_history
from nero.run.staging import staged_run
from nero.tables import restore_cells

N = 6


def fake_run(path: Path, paths: list[str] | None = None, created: str = "2026-01-01") -> Run:
    """A run as the review store sees it: a folder, its samples and its manifest."""
    path.mkdir(parents=True, exist_ok=True)
    paths = paths or [f"/data/img{i}.png" for i in range(N)]
    manifest = {"format_version": 1, "model": {"arch": "x"}, "created": created}
    (path / "manifest.json").write_text(json.dumps(manifest))
    samples = pd.DataFrame({"index": range(len(paths)), "path": paths})
    return Run(path, manifest, samples, pd.DataFrame(), {})


def mark(index: int, review: str = "agree", **kw) -> Mark:
    return Mark(index, review, kw.pop("reviewer", "Dr Rao"), **kw)


def test_marks_record_who_what_and_against_which_verdict(tmp_path):
    run = fake_run(tmp_path / "r")
    saved = add_marks(
        run,
        [mark(2, "disagree", method="vim", score=16.46, verdict="OOD", cutoffs="b 14, o 17",
              tags=("Frame", "bubbles", "frame"), note="rim of the scope")],
    )  # fmt: skip
    assert saved == 1
    row = review_history(run).iloc[0]
    assert (row["index"], row["path"], row["review"]) == (2, "/data/img2.png", "disagree")
    assert (row["method"], row["score"], row["verdict"]) == ("vim", 16.46, "OOD")
    assert (row["tags"], row["reviewer"], row["identity"]) == ("frame,bubbles", "Dr Rao", "local")
    assert row["run"] == "2026-01-01" and row["cutoffs"] == "b 14, o 17"
    add_marks(run, [mark(2, "agree")])
    assert current_reviews(run).loc[2, "review"] == "agree"
    assert len(review_history(run)) == 2  # the earlier mark stays in the history


def test_the_history_is_append_only(tmp_path):
    run = fake_run(tmp_path / "r")
    add_marks(run, [mark(0)])
    con = sqlite3.connect(run.path / reviews.REVIEWS_FILE)
    for statement in ("UPDATE marks SET review='disagree'", "DELETE FROM marks"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(statement)
    con.close()
    assert review_history(run)["review"].tolist() == ["agree"]


def test_bad_marks_save_nothing(tmp_path):
    run = fake_run(tmp_path / "r")
    with pytest.raises(ValueError, match="outside 0..5"):
        add_marks(run, [mark(0), mark(N)])  # all or none
    with pytest.raises(ValueError, match="review must be"):
        add_marks(run, [mark(0, "maybe")])
    with pytest.raises(ValueError, match="reviewer's name"):
        add_marks(run, [mark(0, reviewer="  ")])
    assert review_history(run).empty


def test_the_old_csv_is_imported_once_and_left_in_place(tmp_path):
    run = fake_run(tmp_path / "r")
    legacy = run.path / reviews.LEGACY_FILE
    legacy.write_text(
        "index,path,review,note,reviewer,time\n"
        "1,/data/img1.png,disagree,bubbles,Dr A,2025-01-01T00:00:00+00:00\n"
        "3,/data/img3.png,unsure,,,2025-01-02T00:00:00+00:00\n"
    )
    before = legacy.read_bytes()
    assert review_history(run)["review"].tolist() == ["disagree", "unsure"]  # read, not written
    assert not (run.path / reviews.REVIEWS_FILE).exists()
    add_marks(run, [mark(4)])
    add_marks(run, [mark(5)])
    history = review_history(run)
    assert history["index"].tolist() == [1, 3, 4, 5]
    assert history["identity"].tolist() == ["imported", "imported", "local", "local"]
    assert history["reviewer"].tolist()[:2] == ["Dr A", "unknown"]
    assert legacy.read_bytes() == before


def test_an_unreadable_old_csv_blocks_the_save_and_says_so(tmp_path):
    run = fake_run(tmp_path / "r")
    (run.path / reviews.LEGACY_FILE).write_text('index,path\n1\n\x00garbage,"')
    with pytest.raises(ReviewStoreError, match="annotations.csv"):
        add_marks(run, [mark(0)])


def test_a_corrupt_database_is_named_and_the_run_untouched(tmp_path):
    run = fake_run(tmp_path / "r")
    store = run.path / reviews.REVIEWS_FILE
    store.write_bytes(b"this is not sqlite" * 100)
    files = {p.name: p.read_bytes() for p in run.path.iterdir()}
    for call in (lambda: review_history(run), lambda: add_marks(run, [mark(0)])):
        with pytest.raises(ReviewStoreError, match="reviews.sqlite is not a readable review"):
            call()
    assert {p.name: p.read_bytes() for p in run.path.iterdir()} == files


def test_a_locked_database_gives_a_clear_message(tmp_path, monkeypatch):
    run = fake_run(tmp_path / "r")
    add_marks(run, [mark(0)])
    monkeypatch.setattr(reviews, "LOCK_WAIT_S", 0.2)
    holder = sqlite3.connect(run.path / reviews.REVIEWS_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ReviewStoreError, match="held by another process.*nothing was saved"):
            add_marks(run, [mark(1)])
        assert len(review_history(run)) == 1  # readers are not blocked by a writer (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_marks_follow_their_image_when_the_run_is_re_evaluated(tmp_path):
    """Overwriting a run carries its reviews; indices are re-found by path."""
    out = tmp_path / "run"
    run = fake_run(out)
    add_marks(run, [mark(1, "disagree"), mark(4, "unsure")])
    (out / "batches" / "exam").mkdir(parents=True)
    (out / "batches" / "exam" / "scores.csv").write_text("path\nx\n")
    with staged_run(out, overwrite=True) as stage:
        # the new run lists the images in another order and no longer holds img1
        fake_run(stage, [f"/data/img{i}.png" for i in (4, 0, 2, 3, 5)], created="2026-02-02")
    new = fake_run(out, [f"/data/img{i}.png" for i in (4, 0, 2, 3, 5)], created="2026-02-02")
    history = review_history(new)
    assert history["path"].tolist() == ["/data/img1.png", "/data/img4.png"]
    assert history["index"].tolist() == [-1, 0]  # img1 is gone from the run, img4 is row 0
    assert current_reviews(new)["review"].to_dict() == {0: "unsure"}
    kept = [p for p in out.iterdir() if p.name.startswith("batches.replaced-")]
    assert len(kept) == 1 and (kept[0] / "exam" / "scores.csv").is_file()


def test_the_export_is_spreadsheet_safe_and_round_trips(tmp_path):
    run = fake_run(tmp_path / "r", ['=HYPERLINK("http://x")', "/a.png", "@SUM(1)", "b", "c", "d"])
    note = "Zökum – ulcère 🩺\n=2+3 on a second line"
    add_marks(run, [mark(0, note="=cmd|' /C calc'!A0"), mark(2, note=note, reviewer="+Dr X")])
    text = reviews.reviews_csv(run)
    table = pd.read_csv(StringIO(text), keep_default_na=False)
    for col in ("path", "note", "reviewer"):
        assert not table[col].str.match(r"[=+\-@\t\r]").any(), col
    back = restore_cells(table)
    assert back["path"].tolist() == ['=HYPERLINK("http://x")', "@SUM(1)"]
    assert back["note"].tolist() == ["=cmd|' /C calc'!A0", note]
    assert back["reviewer"].tolist() == ["Dr Rao", "+Dr X"]


MARKER = """
import sys
from pathlib import Path
import pandas as pd
from nero.run.directory import Run
from nero.run.reviews import Mark, add_marks
path, worker, count, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
samples = pd.DataFrame({"index": range(n), "path": [f"/data/img{i}.png" for i in range(n)]})
run = Run(path, {"created": "2026-01-01"}, samples, pd.DataFrame(), {})
for i in range(count):
    add_marks(run, [Mark(i % n, "agree", f"worker {worker}", note=f"{worker}:{i}")])
"""


def test_four_processes_marking_at_once_lose_nothing(tmp_path):
    """The load test: 4 processes × 500 marks on one run; every mark kept, in order."""
    workers, count = 4, 500
    run = fake_run(tmp_path / "r")
    procs = [
        subprocess.Popen([sys.executable, "-c", MARKER, str(run.path), str(w), str(count), str(N)])
        for w in range(workers)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * workers
    history = review_history(run)
    assert len(history) == workers * count
    assert history["mark"].is_monotonic_increasing and history["mark"].is_unique
    assert history["time"].is_monotonic_increasing  # taken inside the write lock
    for w in range(workers):
        own = history.loc[history["reviewer"] == f"worker {w}", "note"]
        assert own.tolist() == [f"{w}:{i}" for i in range(count)]


def test_the_report_csv_neutralises_set_names(tmp_path):
    from nero.run.report import format_report

    run = fake_run(tmp_path / "r")
    run.report = {"results": {"=cmd|calc": {"nero": dict.fromkeys(("auroc", "fpr95"), 50.0)}}}
    header = format_report(run, "csv").splitlines()[0]
    assert "'=cmd|calc/auroc" in header and ",=cmd" not in header


def test_every_csv_export_goes_through_the_safe_writer():
    """Only the run's own tables (numbers and absolute paths, read back by the engine) are
    written with ``to_csv`` directly; every export uses :func:`nero.tables.safe_csv`."""
    root = Path(__file__).resolve().parent.parent
    internal = {"nero/tables.py", "nero/run/directory.py", "nero/run/pipeline.py"}
    offenders = [
        str(p.relative_to(root))
        for folder in ("nero", "dashboard")
        for p in (root / folder).rglob("*.py")
        if str(p.relative_to(root)) not in internal
        # a table written in appended chunks neutralises each chunk first
        and p.read_text().count(".to_csv(") != p.read_text().count("neutralise_cells(rows).to_csv(")
    ]
    assert offenders == []
