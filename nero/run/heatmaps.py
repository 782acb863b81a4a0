"""Heatmaps of a run's samples: the run's model, its training envelope, NERO's starting
relevance for the sample, and a cache of results next to the run (``RUN/heatmaps/``)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from nero.data.images import read_image
from nero.explain.attribution import Heatmap, HeatmapRequest, compute_heatmaps
from nero.explain.envelope import (
    ENVELOPE_FILE,
    HEATMAP_DIR,
    Envelope,
    EnvelopeError,
    fit_envelope,
    gate_points,
)
from nero.explain.kinds import KINDS
from nero.model.classifier import LoadedModel
from nero.run import checkpoint as run_model
from nero.run.directory import Run, read_run

CACHE_VERSION = 5  # part of every cached heatmap's name: bumped when a kind's meaning changes


def load_run_model(run: Run) -> LoadedModel:
    """The run's classifier for attribution (checked against its sha256, kept loaded)."""
    return run_model.load_run_model(run, channels_last=True)


def sample_image(run: Run, index: int) -> Image.Image:
    """The sample's image as RGB, decoded as the evaluation decoded it."""
    return read_image(run.sample_path(index))


def ood_deviation(run: Run, index: int, target: int | None = None) -> tuple[np.ndarray, int]:
    """NERO's per-neuron deviation of one sample and the class of the centroid it is from.

    ``target=None``: the nearest centroid, exactly ``NERO.explain(...).deviation``.
    A class index: that class's nearest centroid instead ("how is it unlike class t?").
    """
    relevance = run.sample_relevance(index)
    nearest = run.detector.nearest(relevance, target)
    return run.detector.deviation(relevance, nearest.centroid)[0], int(nearest.label[0])


def distance_contributions(
    run: Run, index: int, target: int | None = None
) -> tuple[np.ndarray, int]:
    """Each neuron's share of NERO's distance to the centroid (they sum to the distance)."""
    relevance = run.sample_relevance(index)
    nearest = run.detector.nearest(relevance, target)
    shares = run.detector.distance_shares(relevance, nearest.centroid)
    return shares[0], int(nearest.label[0])


def heatmap_cache_path(run: Run, index: int, kind: str, target: int | None) -> Path:
    name = f"{index}_{kind}_{'auto' if target is None else target}.v{CACHE_VERSION}.npz"
    return run.path / HEATMAP_DIR / name


def _save_quietly(save: Callable[[Path], None], path: Path) -> None:
    try:
        path.parent.mkdir(exist_ok=True)
        save(path)
    except OSError as exc:  # a read-only run still gets its result, just not cached
        warnings.warn(f"could not cache {path}: {exc}", stacklevel=3)


@functools.lru_cache(maxsize=4)
def _run_envelope(run_path: str, checkpoint_sha256: str | None) -> Envelope | None:
    run = read_run(run_path)
    loaded = load_run_model(run)
    if not gate_points(loaded.model):
        return None
    cache = run.path / HEATMAP_DIR / ENVELOPE_FILE
    n_classes = loaded.head.out_features
    if cache.is_file():
        try:
            envelope = Envelope.load(cache)
            envelope.check(loaded.model, n_classes)
            return envelope
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"refitting the unreadable envelope {cache}: {exc}", stacklevel=2)
    train = run.samples[run.samples["split"] == "id_train"]
    try:
        envelope = fit_envelope(
            loaded.model,
            [run.sample_path(int(i)) for i in train["index"]],
            train["label"].astype(int).tolist(),
            n_classes,
            run_model.run_preprocessing(run),
        )
    except EnvelopeError as exc:
        warnings.warn(f"no training envelope for {run.path}: {exc}", stacklevel=2)
        return None
    _save_quietly(envelope.save, cache)
    return envelope


def run_envelope(run: Run) -> Envelope | None:
    """The training envelope of the run's model (fitted once, kept in ``RUN/heatmaps/``).

    None where the architecture has no gate points or no training image can be read.
    """
    sha = run.manifest["model"].get("checkpoint_sha256")
    return _run_envelope(str(run.path.resolve()), sha)


def run_heatmaps(run: Run, index: int, wanted: Sequence[tuple[str, int | None]]) -> list[Heatmap]:
    """Heatmaps ``(kind, target)`` of sample ``index`` of a run, cached in ``RUN/heatmaps/``.

    Cached ones are loaded; the rest are computed together in one batched pass and saved
    as ``{index}_{kind}_{target}.v{N}.npz`` (``auto`` for the default target). The model
    and the training envelope are loaded once per run and kept.
    """
    for kind, target in wanted:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "nero" and target is not None:
            raise ValueError("the 'nero' heatmap starts from every class; it takes no target")
    found: dict[int, Heatmap] = {}
    for k, (kind, target) in enumerate(wanted):
        cache = heatmap_cache_path(run, index, kind, target)
        if cache.is_file():
            try:
                found[k] = Heatmap.load(cache)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                warnings.warn(f"ignoring unreadable cached heatmap {cache}: {exc}", stacklevel=2)
    missing = [k for k in range(len(wanted)) if k not in found]
    if missing:
        path = run.sample_path(index)
        loaded = load_run_model(run)
        preprocessing = run_model.run_preprocessing(run)
        prepared = preprocessing.prepare(read_image(path))
        tensor = preprocessing.normalise(prepared).unsqueeze(0)
        requests = []
        for k in missing:
            kind, target = wanted[k]
            deviation = None
            if kind == "ood":
                deviation, target = ood_deviation(run, index, target)
            elif kind == "distance":
                deviation, target = distance_contributions(run, index, target)
            requests.append(HeatmapRequest(kind, target, deviation))
        envelope = run_envelope(run) if any(r.kind == "ood" for r in requests) else None
        arch = run.manifest["model"]["arch"]
        computed = compute_heatmaps(
            loaded.model, loaded.head, tensor, arch, requests, envelope=envelope
        )
        for k, heat in zip(missing, computed, strict=True):
            found[k] = heat = heat.located(prepared)
            _save_quietly(heat.save, heatmap_cache_path(run, index, *wanted[k]))
    return [found[k] for k in range(len(wanted))]


def run_heatmap(run: Run, index: int, kind: str = "class", target: int | None = None) -> Heatmap:
    """One heatmap of a run sample: :func:`run_heatmaps` with a single ``(kind, target)``."""
    return run_heatmaps(run, index, [(kind, target)])[0]
