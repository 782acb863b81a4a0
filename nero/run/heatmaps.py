"""Every heatmap of a run, from one owner: :class:`RunHeatmaps` holds the run's model, its
training envelope, its input preprocessing and its colour scale (each loaded once), computes
the maps of run samples (cached in ``RUN/heatmaps/``) and of new images, and reads them as
:class:`~nero.run.heatmap_view.HeatmapView`. The command line, the dashboard's pages and the
benches all ask it."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from nero.data.images import read_image
from nero.data.preprocess import Preprocessing
from nero.explain.attribution import Heatmap, HeatmapRequest, compute_heatmaps
from nero.explain.envelope import (
    ENVELOPE_FILE,
    Envelope,
    EnvelopeError,
    fit_envelope,
    gate_points,
)
from nero.explain.kinds import HEATMAP_DIR, HEATMAP_KINDS, KINDS, cache_name
from nero.model.classifier import LoadedModel
from nero.run import checkpoint as run_model
from nero.run import frame_flags, heatmap_scale
from nero.run.directory import Run, read_run
from nero.run.heatmap_scale import SCALED_KINDS, HeatmapScale
from nero.run.heatmap_view import HeatmapView, heatmap_view

Wanted = Sequence[tuple[str, int | None]]  # (kind, target) pairs; target None = the default


class RunHeatmaps:
    """The heatmaps of one run: its samples' (cached on disk) and new images'."""

    def __init__(self, run: Run) -> None:
        self.run = run

    @functools.cached_property
    def loaded(self) -> LoadedModel:
        """The run's classifier for attribution (checked against its sha256)."""
        return run_model.load_run_model(self.run, channels_last=True)

    @functools.cached_property
    def preprocessing(self) -> Preprocessing:
        return run_model.run_preprocessing(self.run)

    @functools.cached_property
    def envelope(self) -> Envelope | None:
        """The training envelope (fitted once, kept in ``RUN/heatmaps/``); None where the
        architecture has no gate points or no training image can be read."""
        return _fitted_envelope(self.run, self.loaded, self.preprocessing)

    def scale(self, compute: bool = True) -> HeatmapScale | None:
        """The run's colour scale; calibrated now (and stored) when missing and ``compute``."""
        found = heatmap_scale.read_scale(self.run.path)
        if found is not None or not compute:
            return found
        rows = heatmap_scale.calibration_rows(self.run)
        wanted = [(kind, None) for kind in SCALED_KINDS]
        found = heatmap_scale.calibrate([self.sample(int(i), wanted) for i in rows], self.run)
        heatmap_scale.store_scale(self.run.path, found)
        return found

    # ------------------------------------------------------------------ computing
    def requests(self, relevance: np.ndarray, wanted: Wanted) -> list[HeatmapRequest]:
        """What to propagate for each ``(kind, target)`` of an image with this relevance row
        (1×(D+1)): a feature kind starts from NERO's view of it (its kind entry says which)."""
        out = []
        for kind, target in wanted:
            start = HEATMAP_KINDS[kind].from_detector
            if start is None:
                out.append(HeatmapRequest(kind, target))
                continue
            nearest = self.run.detector.nearest(relevance, target)
            seed = getattr(self.run.detector, start)(relevance, nearest.centroid)[0]
            out.append(HeatmapRequest(kind, int(nearest.label[0]), seed))
        return out

    def image(self, image: Image.Image, relevance: np.ndarray, wanted: Wanted) -> list[Heatmap]:
        """Heatmaps of one image (not cached), its relevance row as the run computed it."""
        check_wanted(wanted)
        prepared = self.preprocessing.prepare(image)
        requests = self.requests(relevance, wanted)
        envelope = self.envelope if any(r.kind == "ood" for r in requests) else None
        computed = compute_heatmaps(
            self.loaded.model,
            self.loaded.head,
            self.preprocessing.normalise(prepared).unsqueeze(0),
            self.run.manifest["model"]["arch"],
            requests,
            envelope=envelope,
        )
        return [heat.located(prepared) for heat in computed]

    def sample(self, index: int, wanted: Wanted) -> list[Heatmap]:
        """Heatmaps of run sample ``index``: cached ones loaded, the rest computed together in
        one batched pass and saved as ``{index}_{kind}_{target}.v{N}.npz``."""
        check_wanted(wanted)
        found = {k: heat for k, pair in enumerate(wanted) if (heat := self._cached(index, *pair))}
        missing = [k for k in range(len(wanted)) if k not in found]
        image = None
        if missing:
            image = read_image(self.run.sample_path(index))
            relevance = self.run.sample_relevance(index)
            computed = self.image(image, relevance, [wanted[k] for k in missing])
            for k, heat in zip(missing, computed, strict=True):
                found[k] = heat
                _save_quietly(heat.save, cache_path(self.run, index, *wanted[k]))
        ood = next((found[k] for k, (kind, _) in enumerate(wanted) if kind == "ood"), None)
        if ood is not None and not frame_flags.has_share(self.run, index):
            image = image if image is not None else read_image(self.run.sample_path(index))
            share = frame_flags.share_of(ood.original(), np.asarray(image))
            frame_flags.record_shares(self.run, {index: share})  # the worklist's frame count
        return [found[k] for k in range(len(wanted))]

    def _cached(self, index: int, kind: str, target: int | None) -> Heatmap | None:
        path = cache_path(self.run, index, kind, target)
        if not path.is_file():
            return None
        try:
            return Heatmap.load(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"ignoring unreadable cached heatmap {path}: {exc}", stacklevel=3)
            return None

    # ------------------------------------------------------------------ reading
    def views(self, heats: Sequence[Heatmap], compute_scale: bool = False) -> list[HeatmapView]:
        """What each map says on this run's colour scale (calibrated first if
        ``compute_scale``; a page passes False: calibrating there would stall it)."""
        scale = self.scale(compute=compute_scale)
        return [heatmap_view(heat, scale) for heat in heats]


def check_wanted(wanted: Wanted) -> None:
    for kind, target in wanted:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not HEATMAP_KINDS[kind].takes_target and target is not None:
            raise ValueError(f"the {kind!r} heatmap starts from every class; it takes no target")


@functools.lru_cache(maxsize=4)
def _heatmaps_at(run_path: str, checkpoint_sha256: str | None, written: int) -> RunHeatmaps:
    return RunHeatmaps(read_run(run_path))


def heatmaps_of(run: Run) -> RunHeatmaps:
    """The run's heatmap owner, kept per run folder, model and writing of the run (a run
    replaced with ``--overwrite`` gets a new one): model and envelope are loaded once."""
    written = (run.path / "manifest.json").stat().st_mtime_ns
    sha = run.manifest["model"].get("checkpoint_sha256")
    return _heatmaps_at(str(run.path.resolve()), sha, written)


def cache_path(run: Run, index: int, kind: str, target: int | None) -> Path:
    return run.path / HEATMAP_DIR / cache_name(index, kind, target)


def _save_quietly(save: Callable[[Path], None], path: Path) -> None:
    try:
        path.parent.mkdir(exist_ok=True)
        save(path)
    except OSError as exc:  # a read-only run still gets its result, just not cached
        warnings.warn(f"could not cache {path}: {exc}", stacklevel=3)


def _fitted_envelope(
    run: Run, loaded: LoadedModel, preprocessing: Preprocessing
) -> Envelope | None:
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
            preprocessing,
        )
    except EnvelopeError as exc:
        warnings.warn(f"no training envelope for {run.path}: {exc}", stacklevel=2)
        return None
    _save_quietly(envelope.save, cache)
    return envelope


# ---------------------------------------------------------------------- shorthands
def load_run_model(run: Run) -> LoadedModel:
    """The run's classifier for attribution (kept loaded)."""
    return heatmaps_of(run).loaded


def run_envelope(run: Run) -> Envelope | None:
    """The training envelope of the run's model (fitted once, kept in ``RUN/heatmaps/``)."""
    return heatmaps_of(run).envelope


def run_heatmap_scale(run: Run, compute: bool = True) -> HeatmapScale | None:
    """The run's stored heatmap scale; calibrated now (and stored) when missing and ``compute``."""
    return heatmaps_of(run).scale(compute)


def sample_image(run: Run, index: int) -> Image.Image:
    """The sample's image as RGB, decoded as the evaluation decoded it."""
    return read_image(run.sample_path(index))


def run_heatmaps(run: Run, index: int, wanted: Wanted) -> list[Heatmap]:
    """Heatmaps ``(kind, target)`` of sample ``index`` of a run (:meth:`RunHeatmaps.sample`)."""
    return heatmaps_of(run).sample(index, wanted)


def run_heatmap(run: Run, index: int, kind: str = "class", target: int | None = None) -> Heatmap:
    """One heatmap of a run sample: :func:`run_heatmaps` with a single ``(kind, target)``."""
    return run_heatmaps(run, index, [(kind, target)])[0]


def ood_deviation(run: Run, index: int, target: int | None = None) -> tuple[np.ndarray, int]:
    """NERO's per-neuron deviation of one sample and the class of the centroid it is from
    (``target=None``: the nearest centroid, exactly ``NERO.explain(...).deviation``)."""
    (request,) = heatmaps_of(run).requests(run.sample_relevance(index), [("ood", target)])
    return request.deviation, request.target


def distance_contributions(
    run: Run, index: int, target: int | None = None
) -> tuple[np.ndarray, int]:
    """Each neuron's share of NERO's distance to the centroid (they sum to the distance)."""
    (request,) = heatmaps_of(run).requests(run.sample_relevance(index), [("distance", target)])
    return request.deviation, request.target
