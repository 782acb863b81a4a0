"""One colour scale per run, and an honest "nothing unusual here" for OOD heatmaps.

A heatmap drawn at its own maximum looks equally alarming whether it carries strong evidence
or none. Calibration on the run's in-distribution test images fixes, for each heatmap kind,
the relevance drawn at full colour (a high percentile of |relevance| over normal images'
maps), and for the OOD heatmap the evidence normal images already show (a high percentile
of their positive relevance mass): an OOD heatmap at or below it is "no unusual evidence".
Stored as ``RUN/heatmaps/scale.v{N}.json``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nero.explain.attribution import Heatmap
from nero.explain.kinds import CACHE_VERSION, HEATMAP_DIR
from nero.files import write_json
from nero.run.directory import Run

SCALE_FILE = f"scale.v{CACHE_VERSION}.json"
# Normal images whose heatmaps set the scale: enough for a stable high percentile, few
# enough to take seconds (two heatmaps each, in one pass).
CALIBRATION_IMAGES = 48
# |relevance| at this percentile of the normal images' pixels is drawn at full colour.
PIXEL_PERCENTILE = 99.5
# An OOD heatmap is unusual when its positive mass exceeds this percentile of normal images'.
NORMAL_EVIDENCE_PERCENTILE = 95.0
SCALED_KINDS = ("class", "ood")  # the kinds whose colour scale the run calibrates


@dataclass(frozen=True)
class KindScale:
    """How one heatmap kind is drawn in this run."""

    pixel: float  # |relevance| drawn at full colour
    normal_masses: list[float]  # positive mass of each calibration image's map

    @property
    def normal_evidence(self) -> float:
        """The mass normal images reach (:data:`NORMAL_EVIDENCE_PERCENTILE`)."""
        return float(np.percentile(self.normal_masses, NORMAL_EVIDENCE_PERCENTILE))

    def share_of_normal_below(self, relevance: np.ndarray) -> float:
        """% of normal images whose map carries less evidence than this one."""
        return float(100.0 * np.mean(np.asarray(self.normal_masses) < evidence(relevance)))


def evidence(relevance: np.ndarray) -> float:
    """A map's evidence: the total of its positive relevance."""
    return float(np.clip(np.asarray(relevance, np.float64), 0, None).sum())


@dataclass(frozen=True)
class HeatmapScale:
    """The run's colour scales and normal-evidence levels, one per heatmap kind."""

    kinds: dict[str, KindScale]

    def pixel(self, kind: str) -> float | None:
        found = self.kinds.get(kind)
        return found.pixel if found is not None else None

    def unusual(self, heat: Heatmap) -> bool | None:
        """True when an OOD heatmap shows more evidence than normal images (None: not OOD)."""
        found = self.kinds.get(heat.kind)
        if heat.kind != "ood" or found is None:
            return None
        return evidence(heat.relevance) > found.normal_evidence


def display_scale(relevance: np.ndarray, run_pixel: float | None) -> tuple[float, float]:
    """The |relevance| to draw at full colour, and how many times the run's scale it is.

    At least the run's scale, so a map weaker than normal images' maps is drawn faintly; a
    map stronger than that is drawn at its own high percentile (else it would be one
    saturated patch), and the factor says how much stronger it is.
    """
    own = float(np.percentile(np.abs(np.asarray(relevance, np.float64)), PIXEL_PERCENTILE))
    if run_pixel is None or run_pixel <= 0:
        return own or 1.0, 1.0
    scale = max(run_pixel, own)
    return scale, scale / run_pixel


def calibration_rows(run: Run, n: int = CALIBRATION_IMAGES) -> np.ndarray:
    """ID test rows spread evenly over the split (deterministic)."""
    rows = run.rows("id_test")
    if rows.size <= n:
        return rows
    return rows[np.linspace(0, rows.size - 1, n).round().astype(int)]


def calibrate(maps: Sequence[Sequence[Heatmap]], run: Run) -> HeatmapScale:
    """The heatmaps of normal images (per image, one of each :data:`SCALED_KINDS`; from
    :func:`calibration_rows`) → the run's :class:`HeatmapScale`."""
    by_kind: dict[str, list[np.ndarray]] = {kind: [] for kind in SCALED_KINDS}
    for heats in maps:
        for heat in heats:
            by_kind[heat.kind].append(np.asarray(heat.relevance, np.float64))
    if not by_kind["class"]:
        raise ValueError(f"{run.path} has no readable id_test images to calibrate heatmaps on")
    kinds = {}
    for kind, found in by_kind.items():
        pixels = np.abs(np.stack(found))
        pixel = float(np.percentile(pixels, PIXEL_PERCENTILE)) or float(pixels.max()) or 1.0
        kinds[kind] = KindScale(pixel, [evidence(m) for m in found])
    return HeatmapScale(kinds)


def read_scale(run_path: Path) -> HeatmapScale | None:
    """The run's stored scale, or None (none stored, or unreadable: said in a warning)."""
    path = run_path / HEATMAP_DIR / SCALE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return HeatmapScale({k: KindScale(**v) for k, v in data["kinds"].items()})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"recalibrating the unreadable heatmap scale {path}: {exc}", stacklevel=3)
        return None


def store_scale(run_path: Path, scale: HeatmapScale) -> None:
    path = run_path / HEATMAP_DIR / SCALE_FILE
    try:
        path.parent.mkdir(exist_ok=True)
        write_json(path, {"kinds": {k: asdict(v) for k, v in scale.kinds.items()}})
    except OSError as exc:  # a read-only run still gets its scale, just not stored
        warnings.warn(f"could not store {path}: {exc}", stacklevel=3)
