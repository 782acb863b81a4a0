"""The run directory: its files (DESIGN.md contract), read back with validation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nero.detect.detector import NERO
from nero.run.recommendation import Recommendation, default_method

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
MODEL_KEYS = ("arch", "class_names")


class RunFormatError(ValueError):
    """A run directory is missing a file or its files disagree."""


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

    def sample_path(self, index: int) -> Path:
        """A sample's image file: as recorded, or relative to the run folder (moved runs)."""
        if not 0 <= index < len(self.samples):
            raise ValueError(f"sample {index} is outside 0..{len(self.samples) - 1}")
        return self.resolve(self.samples["path"].iloc[index])

    def resolve(self, recorded: str) -> Path:
        """A path recorded in ``samples.csv``, found relative to the run when it moved."""
        path = Path(recorded)
        if not path.is_absolute() and not path.exists() and (self.path / path).exists():
            return self.path / path
        return path

    def sample_relevance(self, index: int) -> np.ndarray:
        """One sample's relevance row (1×(D+1), float64), as the detector takes it."""
        if not 0 <= index < len(self.samples):
            raise ValueError(f"sample {index} is outside 0..{len(self.samples) - 1}")
        return np.asarray(self.relevance[index : index + 1], np.float64)

    @property
    def recommendation(self) -> Recommendation | None:
        """The method the run recommends from ID-only evidence, typed (None: none)."""
        return Recommendation.from_record(self.report.get("recommended"))

    @property
    def default_method(self) -> str:
        """The method every front door shows and gives verdicts with unless told otherwise."""
        return default_method(self.methods, self.recommendation)

    @property
    def methods(self) -> list[str]:
        return [c for c in self.scores.columns if c != "index" and not c.startswith("p:")]

    def p_value(self, method: str) -> np.ndarray | None:
        """The method's conformal p-values (``p:METHOD`` in scores.csv), if the run has them."""
        column = f"p:{method}"
        return self.scores[column].to_numpy() if column in self.scores.columns else None

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
