"""Scoring new images against a fitted run, without refitting: ``nero score``.

One streamed, batched pass (the run's own loader and transform, so an image that is in the
run gets the run's own scores): per image the score of every feature-level method the run
holds, the verdict at the run's thresholds (:mod:`nero.run.verdicts`), the percentile among
normal test images, and the predicted class. Rows go to the output table batch by batch;
with ``into``, the arrays go into a named batch of the run (``RUN/batches/NAME/``), written
in a staging folder and renamed into place when complete.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from nero import DEFAULT_BATCH_SIZE
from nero.data.images import is_image
from nero.data.video import VideoError, check_fps, extract_frames, is_video
from nero.detect.registry import Evidence
from nero.detect.relevance import head_relevance, softmax
from nero.files import allocate_npy, write_json
from nero.model.batches import regroup
from nero.model.extract import Engine, forward_batches
from nero.run.batches import BATCHES_DIR, check_batch_name
from nero.run.conformal import FUSION, new_image_p_values
from nero.run.directory import Run
from nero.run.scoring import RunScorer, fusion_combination, fusion_members, id_test_scores
from nero.run.staging import WRITER_FILE, RunLockedError, writer_lock
from nero.run.verdicts import run_thresholds
from nero.tables import neutralise_cells

Progress = Callable[[int, int], None]
# Images scored together: per-call costs of the methods amortised, memory still flat.
SCORE_ROWS = 1024


def verdict_method(run: Run) -> str:
    """The method whose verdict is reported: the run's recommendation, else NERO."""
    return run.default_method


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (recursively) and glob patterns → image and video paths, sorted, unique."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if is_image(p) or is_video(p))
        elif path.is_file():
            found.append(path)
        elif any(c in str(item) for c in "*?["):
            anchor = Path(path.anchor or ".")
            pattern = str(path.relative_to(anchor)) if path.is_absolute() else str(item)
            found += sorted(p for p in anchor.glob(pattern) if is_image(p) or is_video(p))
        else:
            raise FileNotFoundError(f"{item}: no such file, folder or matching pattern")
    unique = list(dict.fromkeys(p.absolute() for p in found))
    if not unique:
        raise ValueError(f"no images or videos found in {', '.join(map(str, inputs))}")
    return unique


def frames_of_videos(
    paths: Sequence[Path], fps: float, folder: Path
) -> tuple[list[Path], dict[str, tuple[str, int, float]], dict[str, str]]:
    """Videos among ``paths`` replaced by their frames at ``fps`` (written into ``folder``).

    Returns the image paths to score, for each frame file (video, frame number, seconds), and
    the videos that could not be read, with why.
    """
    images: list[Path] = []
    frames: dict[str, tuple[str, int, float]] = {}
    failures: dict[str, str] = {}
    for path in paths:
        if not is_video(path):
            images.append(path)
            continue
        try:
            extracted = extract_frames(path, fps, folder / path.stem)
        except VideoError as exc:  # skipped and listed, like an unreadable image
            failures[str(path)] = str(exc)
            continue
        for file, number, time in extracted:
            images.append(file)
            frames[str(file)] = (str(path), number, time)
    return images, frames, failures


@dataclass
class ScoredFiles:
    """What ``nero score`` produced."""

    table: Path | None  # the CSV of one row per readable image
    rows: int
    attempted: int  # images and video frames that were read (or tried)
    failures: dict[str, str]  # path → why it could not be read
    batch: Path | None  # the run's batch folder, when written into the run


def score_files(
    run: Run,
    paths: Sequence[Path],
    out: Path | None = None,
    into: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "cpu",
    progress: Progress | None = None,
    fps: float = 5.0,
    engine: Engine = "local",
    address: str | None = None,
) -> ScoredFiles:
    """Score ``paths`` with the run's model and detectors; see the module docstring.

    Videos among ``paths`` are scored frame by frame at ``fps``; their rows carry the video,
    the frame number and its time in seconds (frames are kept in the batch when ``into``).
    ``engine``/``address``: where the forward pass runs
    (:func:`nero.model.extract.forward_batches`); rows follow ``paths`` with either engine.
    """
    if any(is_video(p) for p in paths):
        check_fps(fps)
    if into is None:
        return _score_files(run, paths, out, None, None, batch_size, device, progress, fps,
                            engine, address)  # fmt: skip
    check_batch_name(run, into)
    stage = run.path / BATCHES_DIR / f".{into}.incomplete"
    stage.mkdir(parents=True, exist_ok=True)
    # One writer per batch name: a second `--into` of the same name is refused, naming the
    # first; a stage left by a killed run is not locked and is started afresh.
    with writer_lock(stage, instead="choose another --into name"):
        for leftover in stage.iterdir():
            if leftover.name != WRITER_FILE:
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        return _score_files(run, paths, out, into, stage, batch_size, device, progress, fps,
                            engine, address)  # fmt: skip


def _score_files(run, paths, out, into, stage, batch_size, device, progress, fps, engine, address):
    scorer = RunScorer(run, device=device)
    main = verdict_method(run)
    fused = set(fusion_members(run)) <= set(scorer.methods)
    scored = set(scorer.methods) | ({FUSION} if FUSION in run.report and fused else set())
    thresholds = run_thresholds(run, main) if main in scored else None
    scratch = None
    unreadable: dict[str, str] = {}
    if any(is_video(p) for p in paths):
        scratch = Path(tempfile.mkdtemp(prefix="nero-frames-")) if stage is None else None
        paths, frames, unreadable = frames_of_videos(paths, fps, (stage or scratch) / "frames")
        if not paths:
            raise ValueError(f"no frame could be read from the videos: {_first(unreadable)}")
    else:
        frames = {}
    try:
        batches = forward_batches(
            scorer.model,
            scorer.head,
            paths,
            scorer.preprocessing,
            batch_size,
            str(scorer.device),
            engine=engine,
            address=address,
        )
        result = _score(
            run, scorer, paths, frames, out, into, stage, batches, main, thresholds, progress,
            unreadable,
        )  # fmt: skip
        return result
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _score(
    run, scorer, paths, frames, out, into, stage, batches, main, thresholds, progress, unreadable
):
    """The streamed pass of :func:`score_files`."""
    n = len(paths)
    arrays: dict[str, np.ndarray] = {}
    failures: dict[str, str] = dict(unreadable)
    # Conformal p-values against the run's ID test scores; fusion when the run has members.
    calibration = id_test_scores(run, run.methods)
    members, combination = fusion_members(run), fusion_combination(run)
    written = 0
    done = 0
    table_path = out if out is not None else (stage / "scores.csv" if stage else None)
    for batch in regroup(batches, SCORE_ROWS):
        index, good, notes = batch.index, batch.good, batch.notes
        done += len(index)
        for i, err in zip(index.tolist(), batch.errors, strict=True):
            if err:
                failures[str(paths[i])] = err
        if not good.any():
            continue
        features, logits = batch.features[good], batch.logits[good]
        relevance = head_relevance(features, scorer.head_arrays, scorer.detector.epsilon)
        relevance = relevance.astype(np.float32)
        data = Evidence(features, logits, relevance)
        scores = {name: method.score(data) for name, method in scorer.methods.items()}
        scores.update(new_image_p_values(calibration, scores, members, combination))
        probs = softmax(logits.astype(np.float64))
        rows = pd.DataFrame(
            {
                "path": [str(paths[i]) for i in index[good]],
                "predicted": [run.class_names[p] for p in probs.argmax(1)],
                "confidence": probs.max(1).round(6),
                **scores,
                "notes": np.asarray(notes, object)[good],
            }
        )
        if frames:
            info = [frames.get(p, ("", -1, float("nan"))) for p in rows["path"]]
            rows["video"] = [v for v, _, _ in info]
            rows["frame"] = [f for _, f, _ in info]
            rows["time"] = [t for _, _, t in info]
        if thresholds is not None:
            rows["verdict"] = thresholds.verdict(scores[main])
            rows["percentile"] = thresholds.percentile(scores[main]).round(2)
        if stage is not None:
            for name, block in (
                ("features", features),
                ("logits", logits),
                ("relevance", relevance),
            ):
                if name not in arrays:  # sized for every path; trimmed below if some fail
                    arrays[name] = allocate_npy(
                        stage / f"{name}.npy", np.float32, (n, block.shape[1])
                    )
                arrays[name][written : written + len(block)] = block
        if table_path is not None:
            neutralise_cells(rows).to_csv(
                table_path, mode="a", header=written == 0, index=False, float_format="%.9g"
            )
        written += len(rows)
        if progress is not None:
            progress(done, n)
    if written == 0:
        raise ValueError(f"none of the {n} images could be read; first error: {_first(failures)}")
    batch = None
    if stage is not None:
        batch = _finish_batch(run, into, stage, arrays, written, failures, main, thresholds)
        if out is not None:
            shutil.copyfile(batch / "scores.csv", out)
    return ScoredFiles(
        out if out is not None else None, written, n + len(unreadable), failures, batch
    )


def _first(failures: dict[str, str]) -> str:
    return next(iter(failures.values()), "unknown")


def _finish_batch(run, name, stage, arrays, written, failures, main, thresholds) -> Path:
    for key, array in arrays.items():
        array.flush()
        if written < array.shape[0]:  # unreadable images: keep the rows that were written
            trimmed = np.array(array[:written])
            del array
            np.save(stage / f"{key}.npy", trimmed)
    write_json(
        stage / "batch.json",
        {
            "name": name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "rows": written,
            "unreadable": failures,
            "verdict_method": main,
            "thresholds": None
            if thresholds is None
            else {"borderline": thresholds.borderline, "ood": thresholds.ood},
            "checkpoint_sha256": run.checkpoint_sha256,
        },
    )
    final = run.path / BATCHES_DIR / name
    if final.exists():  # written meanwhile under another spelling of the run's path
        raise RunLockedError(
            f"the run got a batch named {name!r} while this one was scored; this one is kept "
            f"in {stage} — rename it to keep both"
        )
    table = stage / "scores.csv"
    # Frames of videos were written into the staging folder: name them where they end up.
    table.write_text(table.read_text().replace(str(stage), str(final)))
    (stage / WRITER_FILE).unlink(missing_ok=True)
    stage.rename(final)
    return final
