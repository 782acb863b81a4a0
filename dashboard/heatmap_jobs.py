"""Heatmaps for the pages: started in a background thread when a sample is picked, then
collected into the page cache."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import streamlit as st

from dashboard import loaders
from dashboard.loaders import stamp
from nero.run.directory import Run


def heatmaps_module():
    """``nero.run.heatmaps`` when it can be imported, else None (the views say so)."""
    loaders.configure_torch()  # before any heatmap work, once per process
    try:
        from nero.run import heatmaps
    except Exception:  # any import failure just disables the heatmap views
        return None
    return heatmaps if hasattr(heatmaps, "run_heatmaps") else None


# Heatmaps are torch work that releases the GIL: started in this one worker thread when a
# sample is picked, they compute while the page script draws everything else.
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nero-heatmaps")


_STARTED: dict[tuple, Future] = {}


_STARTED_LOCK = threading.Lock()


_MAX_STARTED = 32  # started but never collected (the user moved on): forget the oldest


# Keys whose heatmaps went into the page cache: a rerun of the page (any widget) must not
# start them again. As many as that cache holds.
_COLLECTED: dict[tuple, None] = {}


_MAX_COLLECTED = 256


def _heatmap_pair(run: Run, index: int, target: int | None) -> tuple[Any, Any]:
    module = heatmaps_module()
    if module is None:
        raise RuntimeError("heatmaps are unavailable in this installation")
    cls, ood = module.run_heatmaps(run, index, [("class", target), ("ood", None)])
    return cls, ood


def start_heatmaps(r: Run, index: int, target: int | None) -> None:
    """Begin computing a sample's class and OOD heatmaps in the background.

    :func:`heatmaps` with the same arguments collects the result (or computes it itself
    when nothing was started). Errors surface there, not here.
    """
    key = (str(r.path), stamp(r.path), int(index), target)
    with _STARTED_LOCK:
        if key in _STARTED or key in _COLLECTED:  # running, or already in the page cache
            return
        while len(_STARTED) >= _MAX_STARTED:
            _STARTED.pop(next(iter(_STARTED)))
        _STARTED[key] = _WORKER.submit(_heatmap_pair, r, int(index), target)


@st.cache_data(show_spinner=False, max_entries=256)
def _heatmaps(
    path: str, key: tuple[int, ...], index: int, target: int | None
) -> dict[str, dict[str, Any]]:
    with _STARTED_LOCK:
        started = _STARTED.pop((path, key, index, target), None)
        _COLLECTED[(path, key, index, target)] = None
        while len(_COLLECTED) > _MAX_COLLECTED:
            _COLLECTED.pop(next(iter(_COLLECTED)))
    run = loaders.run(Path(path))
    if started is not None:
        cls, ood = started.result()
    else:
        cls, ood = _heatmap_pair(run, index, target)
    scale = run_scale(run)
    return {"class": heatmap_fields(cls, scale), "ood": heatmap_fields(ood, scale)}


def heatmap_fields(result: Any, scale: Any = None) -> dict[str, Any]:
    """The parts of a heatmap result the views show (a plain, cacheable dict): the engine's
    :class:`nero.run.heatmap_view.HeatmapView`, the same reading the command line prints."""
    from nero.run.heatmap_view import heatmap_view

    return heatmap_view(result, scale).fields()


def run_scale(run: Run) -> Any:
    """The run's stored heatmap scale, or None (calibrating here would stall the page)."""
    from nero.run.heatmap_scale import run_heatmap_scale

    return run_heatmap_scale(run, compute=False)


def heatmaps(r: Run, index: int, target: int | None = None) -> dict[str, dict[str, Any]]:
    """Class (of ``target``, default predicted) and OOD heatmap of one run sample, cached."""
    return _heatmaps(str(r.path), stamp(r.path), int(index), target)


@st.cache_data(show_spinner=False, max_entries=64)
def image_heatmaps(
    _scorer,
    run_key: str,
    image_key: str,
    _image,
    target: int | None,
    ood_class: int,
    _deviation,
) -> dict[str, dict[str, Any]]:
    """Class and OOD heatmap of an uploaded image with the run's model, in one pass.

    Keys: run folder, image hash, the class target and the centroid class of the deviation.
    """
    module = heatmaps_module()
    if module is None:
        raise RuntimeError("heatmaps are unavailable in this installation")
    prepared = _scorer.preprocessing.prepare(_image)
    tensor = _scorer.preprocessing.normalise(prepared).unsqueeze(0)
    from nero.explain.attribution import HeatmapRequest, compute_heatmaps

    requests = [
        HeatmapRequest("class", target),
        HeatmapRequest("ood", int(ood_class), _deviation),
    ]
    cls, ood = compute_heatmaps(
        _scorer.model,
        _scorer.head,
        tensor,
        _scorer.run.manifest["model"]["arch"],
        requests,
        envelope=module.run_envelope(_scorer.run),
    )
    cls, ood = cls.located(prepared), ood.located(prepared)
    scale = run_scale(_scorer.run)
    return {"class": heatmap_fields(cls, scale), "ood": heatmap_fields(ood, scale)}


@st.cache_data(show_spinner=False, max_entries=256)
def _neuron_heatmap(path: str, key: tuple[int, ...], index: int, neuron: int) -> dict[str, Any]:
    module = heatmaps_module()
    if module is None:
        raise RuntimeError("heatmaps are unavailable in this installation")
    return heatmap_fields(module.run_heatmap(loaders.run(Path(path)), index, "neuron", neuron))


def neuron_heatmap(r: Run, index: int, neuron: int) -> dict[str, Any]:
    """Where one penultimate neuron fires in a run sample (its conditional heatmap), cached."""
    return _neuron_heatmap(str(r.path), stamp(r.path), int(index), int(neuron))
