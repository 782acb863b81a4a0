"""The run directory: written atomically, read back with validation (DESIGN.md contract)."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nero.detect.detector import NERO

FORMAT_VERSION = 1
SAMPLE_COLUMNS = ["index", "path", "split", "label", "pred"]
REQUIRED_FILES = (
    "manifest.json",
    "samples.csv",
    "features.npy",
    "logits.npy",
    "relevance.npy",
    "scores.csv",
    "report.json",
    "detector.npz",
)
INCOMPLETE_SUFFIX = ".incomplete"
WRITER_FILE = ".writer"  # pid of the process holding a staging folder's lock
# What an evaluation writes into its staging folder (anything else there is not ours).
MODEL_KEYS = ("arch", "class_names")
STAGE_SUFFIXES = (".npy", ".npz", ".json", ".csv", ".safetensors", ".joblib", ".png")


class RunFormatError(ValueError):
    """A run directory is missing a file or its files disagree."""


def library_versions() -> dict[str, str]:
    import sklearn
    import torch
    import torchvision

    from nero import __version__

    return {
        "nero": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


class OutputError(ValueError):
    """``--out`` points somewhere a run must not be written (nothing was touched)."""


class RunLockedError(RuntimeError):
    """Another process is writing the same run."""


def is_nero_run(path: Path) -> bool:
    """A folder this tool wrote: its ``manifest.json`` is ours (format version and model)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "format_version" in manifest and "model" in manifest


def _contains(outer: Path, inner: Path) -> bool:
    return outer == inner or outer in inner.parents


def check_output(
    out: str | Path,
    data_roots: Sequence[str | Path] = (),
    keep: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> Path:
    """The absolute run folder for ``out``, or :class:`OutputError` before anything is written.

    Refused: a folder that holds (or is, or lies inside) an input data folder; a folder that
    holds a file to ``keep`` (the checkpoint); an existing file; an existing folder that is
    not a NERO run; an existing run unless ``overwrite``.
    """
    out = Path(os.path.abspath(Path(out).expanduser()))  # "runs/.." → its real parent
    real = out.resolve()
    if real == Path(real.anchor) or real == Path.home().resolve():
        raise OutputError(f"--out {out} is the root or home folder; give a run folder")
    for root in data_roots:
        root = Path(root).resolve()
        if _contains(real, root) or _contains(root, real):
            raise OutputError(
                f"--out {out} overlaps the input folder {root}; write the run elsewhere "
                "(nero never writes into, or replaces, its input data)"
            )
    for path in keep:
        if _contains(real, Path(path).resolve()):
            raise OutputError(f"--out {out} holds the input file {path}; write the run elsewhere")
    if out.is_symlink():
        raise OutputError(f"--out {out} is a symbolic link; give the real folder")
    if out.exists():
        if not out.is_dir():
            raise OutputError(
                f"--out {out} is a file; a run is a folder, and nero never replaces other files"
            )
        if any(out.iterdir()):
            if not is_nero_run(out):
                raise OutputError(
                    f"--out {out} exists and is not a NERO run (no manifest.json of ours); "
                    "nero never deletes it: choose another --out"
                )
            if not overwrite:
                raise OutputError(
                    f"a run already exists at {out}; pass --overwrite to replace it (the old "
                    "run is removed only once the new one is complete)"
                )
    stage = stage_path(out)
    if stage.exists() and not stage.is_dir():
        raise OutputError(f"{stage} is a file; move it away so the run can be staged there")
    return out


def stage_path(out: Path) -> Path:
    """Where a run is assembled before it is renamed to ``out``."""
    return out.with_name(out.name + INCOMPLETE_SUFFIX)


@contextmanager
def _writer_lock(stage: Path) -> Iterator[None]:
    """An exclusive lock on the staging folder; a second writer is refused, naming the first."""
    fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_writer(stage)
            raise RunLockedError(
                f"{stage} is being written by another nero process (pid {holder}); wait for it "
                "to finish or stop it, or choose another --out"
            ) from None
        (stage / WRITER_FILE).write_text(f"{os.getpid()}\n")
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_writer(stage: Path) -> str:
    try:
        return (stage / WRITER_FILE).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def stage_is_locked(stage: Path) -> bool:
    """True while a process holds the writer lock of a staging folder."""
    try:
        fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextmanager
def staged_run(
    out: str | Path,
    data_roots: Sequence[str | Path] = (),
    keep: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> Iterator[Path]:
    """A locked staging folder that becomes ``out`` only when the block succeeds.

    ``out`` is checked first (:func:`check_output`): nothing that is not a NERO run is ever
    replaced, and a run only with ``overwrite``, after the new one is complete. On failure
    the staging folder is kept as ``<out>.incomplete`` (no reader mistakes it for a run), so
    arrays already computed are not lost; the next attempt reuses them.
    """
    out = check_output(out, data_roots, keep, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = stage_path(out)
    stage.mkdir(exist_ok=True)
    with _writer_lock(stage):
        yield stage
        # Checked again: another run may have been written there meanwhile.
        check_output(out, data_roots, keep, overwrite)
        (stage / WRITER_FILE).unlink(missing_ok=True)
        if out.exists() and any(out.iterdir()):
            trash = out.with_name(f".{out.name}.replaced-{os.getpid()}-{time.time_ns()}")
            out.rename(trash)
            stage.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            stage.rename(out)  # replaces an empty folder


@dataclass(frozen=True)
class AbandonedStage:
    """A ``<run>.incomplete`` folder a failed or interrupted evaluation left behind."""

    path: Path
    size_bytes: int
    modified: float  # POSIX time
    locked: bool  # a process is writing it right now


def abandoned_stages(root: str | Path) -> list[AbandonedStage]:
    """Staging folders directly under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.endswith(INCOMPLETE_SUFFIX) and not p.is_symlink():
            files = [f for f in p.rglob("*") if f.is_file()]
            size = sum(f.stat().st_size for f in files)
            found.append(AbandonedStage(p, size, p.stat().st_mtime, stage_is_locked(p)))
    return sorted(found, key=lambda s: s.modified)


def remove_stage(stage: AbandonedStage) -> None:
    """Delete an abandoned staging folder (never one being written, never anything else)."""
    if stage.locked or stage_is_locked(stage.path):
        raise RunLockedError(f"{stage.path} is being written by pid {_read_writer(stage.path)}")
    unknown = [
        f
        for f in stage.path.rglob("*")
        if f.is_file() and f.suffix not in STAGE_SUFFIXES and f.name != WRITER_FILE
    ]
    if unknown:
        raise OutputError(
            f"{stage.path} holds files nero does not write ({unknown[0].name}, …); "
            "left in place: remove it yourself"
        )
    shutil.rmtree(stage.path)


def write_samples(path: Path, samples: pd.DataFrame) -> None:
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(f"samples table lacks columns {missing}")
    samples.to_csv(path, index=False)


# ------------------------------------------------------------------ reading
@dataclass
class Run:
    """A loaded run; arrays are memory-mapped so opening a large run is instant."""

    path: Path
    manifest: dict[str, Any]
    samples: pd.DataFrame
    scores: pd.DataFrame
    report: dict[str, Any]

    @cached_property
    def features(self) -> np.ndarray:
        return np.load(self.path / "features.npy", mmap_mode="r")

    @cached_property
    def logits(self) -> np.ndarray:
        return np.load(self.path / "logits.npy", mmap_mode="r")

    @cached_property
    def relevance(self) -> np.ndarray:
        return np.load(self.path / "relevance.npy", mmap_mode="r")

    @cached_property
    def detector(self) -> NERO:
        return NERO.load(self.path / "detector.npz")

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["model"]["class_names"])

    @property
    def checkpoint_path(self) -> Path | None:
        """The model's weights, resolved the same way for every entry point.

        Runs record an absolute path, or a path relative to the run folder for weights kept
        inside it. Runs of older versions may hold a path relative to the folder ``nero
        evaluate`` ran in: it is used when the run folder has no such file.
        """
        ckpt = self.manifest["model"].get("checkpoint")
        if ckpt is None:
            return None
        path = Path(ckpt)
        if path.is_absolute():
            return path
        inside = self.path / path
        return inside if inside.exists() or not path.exists() else path.resolve()

    @property
    def checkpoint_sha256(self) -> str | None:
        return self.manifest["model"].get("checkpoint_sha256")

    @property
    def warnings(self) -> list[str]:
        """What the engine warned about while making the run (degenerate data, …)."""
        return [str(w) for w in self.manifest.get("warnings", [])]

    @property
    def methods(self) -> list[str]:
        return [c for c in self.scores.columns if c != "index"]

    @property
    def ood_sets(self) -> list[str]:
        splits = self.samples["split"].unique()
        return [s.split(":", 1)[1] for s in splits if s.startswith("ood:")]

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.samples["split"].to_numpy() == split)


def _npy_shape(path: Path) -> tuple[int, ...]:
    try:
        return tuple(np.load(path, mmap_mode="r").shape)  # reads the header only
    except ValueError as exc:
        raise RunFormatError(f"{path} is not a readable .npy file: {exc}") from exc


def read_run(path: str | Path) -> Run:
    """Load and validate a run directory; every problem is named with its file."""
    path = Path(path)
    if not path.is_dir():
        raise RunFormatError(f"run directory {path} does not exist")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        hint = " (an interrupted run?)" if path.name.endswith(INCOMPLETE_SUFFIX) else ""
        raise RunFormatError(f"{path} is not a complete run{hint}: missing {missing}")
    manifest = _read_json(path / "manifest.json")
    report = _read_json(path / "report.json")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise RunFormatError(
            f"{path / 'manifest.json'}: format_version {version!r}, "
            f"this nero reads {FORMAT_VERSION}"
        )
    model = manifest.get("model")
    if not isinstance(model, dict) or not all(k in model for k in MODEL_KEYS):
        raise RunFormatError(
            f'{path / "manifest.json"} has no complete "model" entry (needs {list(MODEL_KEYS)})'
        )
    if not isinstance(model["class_names"], list) or not model["class_names"]:
        raise RunFormatError(f"{path / 'manifest.json'}: model.class_names must be a list")
    if not isinstance(report, dict) or not isinstance(report.get("results"), dict):
        raise RunFormatError(f'{path / "report.json"} has no "results" table')
    samples = _read_csv(path / "samples.csv", keep_default_na=False)
    lacking = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if lacking:
        raise RunFormatError(f"{path / 'samples.csv'} lacks columns {lacking}")
    scores = _read_csv(path / "scores.csv")
    n = len(samples)
    if not np.array_equal(samples["index"].to_numpy(), np.arange(n)):
        raise RunFormatError(f"{path / 'samples.csv'}: index column is not 0..{n - 1}")
    for column in ("label", "pred"):
        if not pd.api.types.is_integer_dtype(samples[column]):
            raise RunFormatError(f"{path / 'samples.csv'}: column {column!r} is not integer")
    n_classes = len(model["class_names"])
    shapes = {
        name: _npy_shape(path / f"{name}.npy") for name in ("features", "logits", "relevance")
    }
    d = shapes["features"][1] if len(shapes["features"]) == 2 else -1
    expected = {"features": (n, d), "logits": (n, n_classes), "relevance": (n, d + 1)}
    for name, shape in shapes.items():
        if shape != expected[name]:
            raise RunFormatError(
                f"{path / (name + '.npy')} has shape {shape}, expected {expected[name]} "
                f"({n} rows in samples.csv, {n_classes} classes)"
            )
    if len(scores) != n or "index" not in scores.columns:
        raise RunFormatError(f"{path / 'scores.csv'} has {len(scores)} rows, expected {n}")
    for column in scores.columns:
        values = scores[column]
        if not pd.api.types.is_numeric_dtype(values) or not np.isfinite(values).all():
            raise RunFormatError(
                f"{path / 'scores.csv'}: column {column!r} holds non-numeric or non-finite values"
            )
    return Run(path, manifest, samples, scores, report)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunFormatError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RunFormatError(f"{path} must hold a JSON object")
    return data


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise RunFormatError(f"{path} is not a readable CSV table ({exc})") from exc


def list_runs(root: str | Path) -> list[Path]:
    """Complete runs directly under ``root`` (sub-folders with a manifest), demo first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and (p / "manifest.json").is_file()
        and not p.name.endswith(INCOMPLETE_SUFFIX)
        and not p.name.startswith(".")
    ]
    return sorted(runs, key=lambda p: (p.name != "demo", p.name))
