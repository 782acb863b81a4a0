"""Fitting and scoring a run's methods: training data checked first, warnings kept for the run."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from nero.data.folders import DataError
from nero.detect.detector import NERO
from nero.detect.registry import Evidence, OODMethod, create_method
from nero.detect.relevance import Head
from nero.detect.space import DegenerateFitError
from nero.files import release_pages

# Rows scored at once: big enough for vectorised work, small enough to keep memory flat.
SCORE_CHUNK = 8192


@contextmanager
def recorded_warnings() -> Iterator[list[str]]:
    """Collect the engine's warnings (to store in the run) and still show them afterwards."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages: list[str] = []
        yield messages
    for w in caught:
        if issubclass(w.category, UserWarning):
            messages.append(str(w.message))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    messages[:] = list(dict.fromkeys(messages))


def check_training_evidence(train: Evidence, class_names: list[str]) -> None:
    """Refuse training data no detector can be fitted on; warn about thin classes."""
    n = train.features.shape[0]
    counts = np.bincount(train.labels, minlength=len(class_names))
    empty = [class_names[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"no readable training image is left for class(es) {empty}")
    if n >= 2 and float(np.asarray(train.features, np.float64).var(axis=0).sum()) == 0.0:
        raise DegenerateFitError(
            f"all {n} training images give identical features: no detector can learn what "
            "normal variation looks like (are they copies of one image?)"
        )
    if not np.asarray(train.logits).any():
        raise DegenerateFitError(
            "every training logit is exactly 0: the model's output carries no information "
            "(and relevance, a share of the logits, is undefined)"
        )
    thin = [class_names[c] for c in np.flatnonzero(counts < 2)]
    if thin:
        warnings.warn(
            f"class(es) {thin} have a single training image: their centroid and spread rest on "
            "one sample",
            UserWarning,
            stacklevel=3,
        )


def score_in_chunks(method: OODMethod, evidence: Evidence, chunk: int = SCORE_CHUNK) -> np.ndarray:
    """``method.score`` over row chunks: a method's temporaries (N×D float64 projections,
    distance blocks) then stay the size of a chunk, and the memory-mapped arrays' pages are
    released after each (every feature-level score is per sample, so the result is the same)."""
    n = evidence.features.shape[0]
    out = np.empty(n, np.float64)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        part = Evidence(
            np.asarray(evidence.features[rows]),
            np.asarray(evidence.logits[rows]),
            None if evidence.relevance is None else np.asarray(evidence.relevance[rows]),
        )
        out[rows] = np.asarray(method.score(part), np.float64)
        release_pages(evidence.features, evidence.logits, evidence.relevance)
    return out


def method_factory(detector: NERO, fresh: bool = False) -> Callable[[str], OODMethod]:
    """Every method by name from the registry, ``nero`` configured as the run's detector:
    the detector itself (it is fitted in place and saved with the run) or, with ``fresh``,
    an unfitted one with its parameters (the recommendation's proxies refit it)."""

    def make(name: str) -> OODMethod:
        if name != "nero":
            return create_method(name)
        return create_method("nero", detector=NERO(**detector.get_params()) if fresh else detector)

    return make


def score_methods(
    names: list[str],
    detector: NERO,
    train: Evidence,
    evidence: Evidence,
    head: Head,
    from_images: Callable[[OODMethod], np.ndarray],
    say: Callable[[str, float], None],
    also: Evidence | None = None,
    also_scores: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Fit every method on the training evidence and score all samples; drop non-finite ones.

    ``from_images`` scores a method that needs the images themselves (ODIN's input
    gradients); the others score the cached evidence. ``also`` (e.g. the acquisition
    control's copies) is scored by every feature-level method too, into ``also_scores``.
    """
    scores: dict[str, np.ndarray] = {}
    make = method_factory(detector)
    for i, name in enumerate(names):
        say(f"fitting {name}", 0.7 + 0.25 * i / len(names))
        method = make(name)
        method.fit(train, head)
        release_pages(train.features, train.logits, train.relevance)  # views of a mapped run
        values = from_images(method) if method.needs_inputs else score_in_chunks(method, evidence)
        values = np.asarray(values, np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            message = (
                f"{name} gave {int(bad.sum())} non-finite scores (first rows "
                f"{np.flatnonzero(bad)[:5].tolist()})"
            )
            if name == "nero":
                raise DegenerateFitError(message)
            warnings.warn(f"{message}: it is left out of the run", UserWarning, stacklevel=2)
            continue
        scores[name] = values
        if also is not None and also_scores is not None and not method.needs_inputs:
            extra = np.asarray(score_in_chunks(method, also), np.float64)
            if np.isfinite(extra).all():
                also_scores[name] = extra
    if "nero" not in names:  # the run always holds the fitted detector
        make("nero").fit(train, head)
    return scores
