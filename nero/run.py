"""The run directory: written atomically, read back with validation (DESIGN.md contract)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nero.detector import NERO

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


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


@contextmanager
def staged_run(out: str | Path) -> Iterator[Path]:
    """A staging folder that becomes ``out`` only when the block succeeds.

    On failure the staging folder is kept as ``<out>.incomplete`` (never mistaken for a run:
    it has no name a reader looks for), so arrays already computed are not lost.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(out.name + INCOMPLETE_SUFFIX)
    stage.mkdir(exist_ok=True)
    yield stage
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
        out.rename(trash)
        stage.rename(out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        stage.rename(out)


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
        """The model's weights; a relative path in the manifest is relative to the run."""
        ckpt = self.manifest["model"].get("checkpoint")
        if ckpt is None:
            return None
        return Path(ckpt) if Path(ckpt).is_absolute() else self.path / ckpt

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
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        report = json.loads((path / "report.json").read_text())
    except json.JSONDecodeError as exc:
        raise RunFormatError(f"{path}: invalid JSON ({exc})") from exc
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise RunFormatError(
            f"{path / 'manifest.json'}: format_version {version!r}, "
            f"this nero reads {FORMAT_VERSION}"
        )
    samples = pd.read_csv(path / "samples.csv", keep_default_na=False)
    lacking = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if lacking:
        raise RunFormatError(f"{path / 'samples.csv'} lacks columns {lacking}")
    scores = pd.read_csv(path / "scores.csv")
    n = len(samples)
    if not np.array_equal(samples["index"].to_numpy(), np.arange(n)):
        raise RunFormatError(f"{path / 'samples.csv'}: index column is not 0..{n - 1}")
    n_classes = len(manifest["model"]["class_names"])
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
    return Run(path, manifest, samples, scores, report)


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
