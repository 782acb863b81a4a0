"""Score new images with a run's model and detectors; look up training neighbours and prototypes.

:class:`RunScorer` rebuilds what a run needs to score images it has never seen: the
classifier from the run's checkpoint, the stored NERO detector (not refitted) and every
feature-level method of the run, fitted on the run's own ``id_train`` arrays. Methods that need
input gradients (``needs_inputs``) are skipped: they cannot score from cached evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image

from nero.detect.detector import Explanation
from nero.detect.nero_methods import NeroMethod
from nero.detect.registry import Evidence, OODMethod, create_method, feature_level_methods
from nero.detect.relevance import head_relevance, softmax
from nero.files import release_pages
from nero.model.classifier import capture_head_input, head_arrays
from nero.run.checkpoint import load_run_model, run_preprocessing
from nero.run.conformal import FUSION, new_image_p_values
from nero.run.directory import Run

# Images pushed through the model at once when scoring uploads.
SCORE_BATCH = 16
# Default number of neighbours / prototypes shown for a sample.
DEFAULT_K = 6


class ImageScores(NamedTuple):
    """Everything known about a batch of new images (rows follow the input order)."""

    scores: pd.DataFrame  # one column per method, higher = more OOD
    features: np.ndarray  # N×D float32
    logits: np.ndarray  # N×C float32
    relevance: np.ndarray  # N×(D+1) float32
    explanation: Explanation  # NERO's parts


def feature_methods(run: Run) -> list[str]:
    """The run's methods that can score from features/logits/relevance alone."""
    usable = set(feature_level_methods())
    return [m for m in run.methods if m in usable]


def fusion_members(run: Run) -> list[str]:
    """The methods the run's ``fusion`` combines (none: the run has no fusion)."""
    return list(run.report.get(FUSION, {}).get("members", []))


def fusion_combination(run: Run) -> str:
    """How the run's ``fusion`` combines its members' p-values (runs before the choice: Fisher)."""
    return str(run.report.get(FUSION, {}).get("combination", "fisher"))


def id_test_scores(run: Run, methods: Sequence[str]) -> dict[str, np.ndarray]:
    """Each method's scores on the run's ID test images: what new images' p-values (and
    their fusion) are calibrated against."""
    test = run.rows("id_test")
    return {m: run.scores[m].to_numpy()[test] for m in methods}


def methods_for(run: Run, method: str) -> tuple[str, ...] | None:
    """What a :class:`RunScorer` fits to score new images with ``method`` (NERO first, it
    explains every image); None when ``method`` cannot score new images (ODIN needs their
    gradients)."""
    wanted = fusion_members(run) if method == FUSION else [method]
    usable = feature_methods(run)
    if not wanted or any(m not in usable for m in wanted):
        return None
    return tuple(dict.fromkeys(["nero", *wanted])) if "nero" in usable else tuple(wanted)


class RunScorer:
    """A run's classifier and detectors, ready to score new images on CPU (or ``device``).

    ``methods`` limits which of the run's feature-level methods are fitted (default: all of
    them; NERO alone is instant, the others refit on id_train).
    """

    def __init__(self, run: Run, device: str = "cpu", methods: Sequence[str] | None = None) -> None:
        self.run = run
        self.device = torch.device(device)
        self.preprocessing = run_preprocessing(run)  # the model is fed as it was trained
        loaded = load_run_model(run)
        self.model = loaded.model.to(self.device).eval()
        self.head = loaded.head
        self.head_arrays = head_arrays(loaded.head)
        self.detector = run.detector
        train = run.rows("id_train")
        labels = run.samples["label"].to_numpy()
        evidence = Evidence(run.features, run.logits, run.relevance, labels).rows(train)
        release_pages(run.features, run.logits, run.relevance)
        usable = feature_methods(run)
        wanted = usable if methods is None else list(methods)
        unusable = [m for m in wanted if m not in usable]
        if unusable:
            raise ValueError(
                f"cannot score new images with {unusable}: this run's feature-level methods "
                f"are {usable}"
            )
        self.methods: dict[str, OODMethod] = {}
        members = fusion_members(run)
        fusable = bool(members) and all(m in wanted for m in members)
        self.fused_calibration = id_test_scores(run, [*members, FUSION]) if fusable else {}
        self.skipped = [m for m in run.methods if m not in usable]
        for name in wanted:
            if name == "nero":
                self.methods[name] = NeroMethod(self.detector)  # the stored fit, not a refit
            else:
                self.methods[name] = create_method(name).fit(evidence, self.head_arrays)
                release_pages(run.features, run.logits, run.relevance)

    def evidence(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, ...]:
        """Features, logits and relevance (float32, as a run stores them) of PIL images."""
        if not images:
            raise ValueError("no images to score")
        feats, logits = [], []
        with capture_head_input(self.head) as captured, torch.inference_mode():
            for start in range(0, len(images), SCORE_BATCH):
                batch = torch.stack(
                    [
                        self.preprocessing(im.convert("RGB"))
                        for im in images[start : start + SCORE_BATCH]
                    ]
                )
                out = self.model(batch.to(self.device))
                feats.append(captured["features"].flatten(1).float().cpu().numpy())
                logits.append(out.float().cpu().numpy())
        features = np.concatenate(feats).astype(np.float32)
        relevance = head_relevance(features, self.head_arrays, self.detector.epsilon)
        return features, np.concatenate(logits).astype(np.float32), relevance.astype(np.float32)

    def score_images(self, images: Sequence[Image.Image]) -> ImageScores:
        features, logits, relevance = self.evidence(images)
        data = Evidence(features, logits, relevance)
        raw = {name: m.score(data) for name, m in self.methods.items()}
        if self.fused_calibration:  # fused as the run fuses its images
            members = fusion_members(self.run)
            raw[FUSION] = new_image_p_values(
                self.fused_calibration, raw, members, fusion_combination(self.run)
            )[FUSION]
        scores = pd.DataFrame(raw)
        explanation = self.detector.explain(features, relevance)
        return ImageScores(scores, features, logits, relevance, explanation)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(logits, np.float64))


# ------------------------------------------------------------------ neighbours and prototypes
def nearest_rows(
    run: Run,
    relevance: np.ndarray,
    rows: np.ndarray,
    k: int = DEFAULT_K,
    exclude: int | None = None,
    space: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` of ``rows`` closest to one relevance vector in NERO's PCA space.

    Distance is the detector's own (L1 or L2). ``space`` is the precomputed projection of
    ``rows`` (in that order) to avoid recomputing it; ``exclude`` drops a row index (the sample
    itself). Returns (row indices into the run, distances), nearest first.
    """
    detector = run.detector
    rows = np.asarray(rows, np.int64)
    if space is None:
        space = detector.project(run.relevance[rows])
    query = detector.project(np.asarray(relevance, np.float64).reshape(1, -1))[0]
    dist = detector.space_distance(space, query)
    if exclude is not None:
        dist = np.where(rows == exclude, np.inf, dist)
    k = max(0, min(k, int(np.isfinite(dist).sum())))
    order = np.argsort(dist, kind="stable")[:k]
    return rows[order], dist[order]


def nearest_train(
    run: Run,
    relevance: np.ndarray,
    k: int = DEFAULT_K,
    exclude: int | None = None,
    space: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` id_train rows closest to one relevance vector (:func:`nearest_rows`);
    ``space``: the projection of the id_train rows in ``run.rows("id_train")`` order."""
    return nearest_rows(run, relevance, run.rows("id_train"), k, exclude, space)


def review_rows(run: Run) -> np.ndarray:
    """The rows a reviewer works through: every image but the training ones (ID test, OOD)."""
    return np.flatnonzero(run.samples["split"].to_numpy() != "id_train")


def more_like_this(
    run: Run, index: int, k: int = DEFAULT_K, space: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` images of the run (ID test and OOD, not training) whose relevance is nearest
    to sample ``index``'s, itself left out: (row indices, distances), nearest first.
    ``space``: the projection of :func:`review_rows` (in that order)."""
    relevance = np.asarray(run.relevance[int(index)], np.float64)
    return nearest_rows(run, relevance, review_rows(run), k, int(index), space)


def neuron_prototypes(
    run: Run, neuron: int, k: int = DEFAULT_K, label: int | None = None, by: str = "relevance"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` id_train rows where neuron ``neuron`` matters most: (row indices, values).

    ``by="relevance"``: the largest relevance of the neuron for the decision (CRP's relevance
    maximisation: what the neuron is *used* for); ``"activation"``: the largest activation
    (what excites it). ``label`` keeps one class's images (e.g. the nearest centroid's).
    """
    d = run.features.shape[1]
    if not 0 <= neuron < d:
        raise ValueError(f"neuron {neuron} is out of range: this model has {d} neurons")
    if by not in ("relevance", "activation"):
        raise ValueError(f"by must be 'relevance' or 'activation', got {by!r}")
    train = run.rows("id_train")
    if label is not None:
        train = train[run.samples["label"].to_numpy()[train] == int(label)]
    source = run.relevance if by == "relevance" else run.features
    values = np.asarray(source[train, neuron], np.float64)
    order = np.argsort(-values, kind="stable")[: max(0, k)]
    return train[order], values[order]


# ------------------------------------------------------------------ plain language
# The neurons named in the plain explanation: the fewest that make up this share of the
# distance to the class centroid.
EXPLAINED_SHARE = 0.5


def driving_neurons(run: Run, relevance: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    """The fewest neurons whose shares make up half of the distance to class ``label``'s
    centroid (largest first), and their deviation from it (+: more relevance than normal)."""
    detector = run.detector
    row = np.asarray(relevance, np.float64).reshape(1, -1)
    centroid = detector.nearest(row, target_class=int(label)).centroid
    shares = detector.distance_shares(row, centroid)[0]
    order = np.argsort(-shares, kind="stable")
    total = float(shares.sum())
    if total <= 0:
        return np.zeros(0, np.int64), np.zeros(0)
    count = int(np.searchsorted(np.cumsum(shares[order]), EXPLAINED_SHARE * total)) + 1
    chosen = order[:count]
    return chosen, detector.deviation(row, centroid)[0][chosen]


def plain_explanation(run: Run, relevance: np.ndarray, label: int, verdict: str) -> str:
    """The verdict in a sentence a clinician reads first: unusual for which class, and how."""
    cls = run.class_names[int(label)]
    if verdict == "in-distribution":
        return (
            f"Looks like a normal **{cls}** image: its neurons' relevance is as far from normal "
            f"{cls} images as theirs usually is."
        )
    neurons, deviation = driving_neurons(run, relevance, label)
    total = run.features.shape[1]
    more, less = int((deviation > 0).sum()), int((deviation <= 0).sum())
    lead = "Borderline for" if verdict == "borderline" else "Unusual for"
    return (
        f"{lead} a **{cls}** image: {neurons.size} of its {total} neurons make up half of what "
        f"sets it apart from normal {cls} images — {more} carry more relevance than normal, "
        f"{less} less. The OOD heatmap shows which part of the image drives them."
    )


# Normal test images whose nearest training image sets what "close" means in a run, and how
# many queries are compared with the training set at once (memory: block × train × k).
NEIGHBOUR_REFERENCE_IMAGES = 200
NEIGHBOUR_BLOCK = 16
EQUIDISTANT_SPREAD = 0.01  # nearest and farthest shown within 1 %: none is closer than another


@dataclass(frozen=True)
class NeighbourScale:
    """How far a normal test image's nearest training image is, in NERO's space."""

    typical: float  # median over normal test images
    far: float  # 95th percentile: beyond it, "no close training image"

    def words(self, distances: np.ndarray) -> str:
        """One sentence on a sample's nearest training images, against normal images'."""
        dist = np.asarray(distances, np.float64)
        if dist.size == 0:
            return "No training image to compare with."
        nearest, farthest = float(dist.min()), float(dist.max())
        if nearest > self.far:
            return (
                f"No close training image: even the nearest (d = {nearest:.4g}) is farther than "
                f"95 % of normal test images' nearest ({self.far:.4g}; typically "
                f"{self.typical:.4g}). They are shown, but they do not look like this image."
            )
        relative = nearest / self.typical if self.typical > 0 else float("inf")
        sentence = f"The nearest is {relative:.2g}× as far as a normal test image's nearest."
        if dist.size > 1 and (farthest - nearest) <= EQUIDISTANT_SPREAD * max(nearest, 1e-12):
            sentence += (
                f" All {dist.size} lie at d = {nearest:.4g}–{farthest:.4g} (within 1 %): "
                "effectively equidistant, none closer than the others."
            )
        return sentence


def neighbour_scale(run: Run, space: np.ndarray | None = None) -> NeighbourScale | None:
    """The run's :class:`NeighbourScale` from up to :data:`NEIGHBOUR_REFERENCE_IMAGES` ID test
    images spread over the split (None: no ID test or training image)."""
    detector, train, test = run.detector, run.rows("id_train"), run.rows("id_test")
    if not train.size or not test.size:
        return None
    if space is None:
        space = detector.project(run.relevance[train])
    pick = np.unique(np.linspace(0, test.size - 1, min(NEIGHBOUR_REFERENCE_IMAGES, test.size)))
    queries = detector.project(np.asarray(run.relevance[test[pick.round().astype(int)]]))
    nearest = np.concatenate([
        detector.space_distance(space[None, :, :], block[:, None, :]).min(axis=1)
        for block in np.array_split(queries, max(1, len(queries) // NEIGHBOUR_BLOCK))
    ])  # fmt: skip
    return NeighbourScale(float(np.median(nearest)), float(np.percentile(nearest, 95)))
