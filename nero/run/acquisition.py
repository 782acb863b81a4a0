"""The acquisition control: how much of each OOD set's AUROC the camera alone explains.

Every OOD set recorded on other equipment differs from the training images in its frame:
the surround's shape, the burnt-in text, marker boxes. To see how much of a detection rests
on that, each ID test and OOD image gets a *frame-only* copy (its lit field of view filled
with one colour, :func:`nero.data.field_of_view.frame_only`), the copies go through the run's
own preprocessing and model, and every fitted method scores them. A method that separates an
OOD set's frame-only copies from the ID test copies far from chance (AUROC outside
50 ± :data:`FLAG_MARGIN`) is detecting how the images were recorded, not what they show.

At most :data:`CONTROL_IMAGES` images per split (a seeded, evenly spread sample) are
controlled, so the extra forward pass stays bounded on large runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nero.data.preprocess import Preprocessing
from nero.detect.metrics import auroc, fpr95
from nero.detect.registry import Evidence
from nero.detect.relevance import Head, head_relevance_chunked
from nero.model.classifier import LoadedModel
from nero.model.extract import forward_batches

CONTROL_FILE = "frame_only_scores.csv"
CONTROL_IMAGES = 500  # per split: ID test and each OOD set
FLAG_MARGIN = 10.0  # AUROC points from 50 beyond which a set is flagged
FLAG_TEXT = (
    "these images differ from the training data in how they were recorded; part of this "
    "AUROC measures the camera, not the content"
)


def control_rows(splits: np.ndarray, cap: int = CONTROL_IMAGES) -> np.ndarray:
    """Run rows to control: ID test and every OOD set, at most ``cap`` each, evenly spread."""
    picked = []
    for split in dict.fromkeys(splits):
        if split != "id_test" and not str(split).startswith("ood:"):
            continue
        rows = np.flatnonzero(splits == split)
        if rows.size > cap:
            rows = rows[np.linspace(0, rows.size - 1, cap).round().astype(int)]
        picked.append(rows)
    return np.concatenate(picked) if picked else np.zeros(0, np.int64)


def frame_only_evidence(
    model: LoadedModel,
    paths: Sequence[Path],
    preprocessing: Preprocessing,
    head: Head,
    epsilon: float,
    batch_size: int,
    device: str | None,
) -> tuple[Evidence, np.ndarray]:
    """Features, logits and relevance of the frame-only copies of ``paths``, and which of the
    paths could be read (rows of the evidence follow those)."""
    control = dataclasses.replace(preprocessing, frame_only=True)
    n = len(paths)
    features = logits = None
    good = np.zeros(n, bool)
    for batch in forward_batches(model.model, model.head, paths, control, batch_size, device):
        if features is None:
            features = np.zeros((n, batch.features.shape[1]), np.float32)
            logits = np.zeros((n, batch.logits.shape[1]), np.float32)
        features[batch.index], logits[batch.index] = batch.features, batch.logits
        good[batch.index] = batch.good
    kept = np.flatnonzero(good)
    if features is None or kept.size == 0:
        return Evidence(np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32)), kept
    features, logits = features[kept], logits[kept]
    relevance = np.zeros((kept.size, features.shape[1] + 1), np.float32)
    head_relevance_chunked(features, head, epsilon, 8192, relevance)
    return Evidence(features, logits, relevance), kept


def acquisition_evidence(
    paths: Sequence[Path], splits: np.ndarray, **forward: Any
) -> tuple[Evidence, np.ndarray]:
    """The control of a run: evidence of the frame-only copies of its :func:`control_rows`,
    and those run rows (the readable ones: rows of the evidence follow them). ``forward``:
    the other arguments of :func:`frame_only_evidence`."""
    rows = control_rows(np.asarray(splits, object))
    evidence, kept = frame_only_evidence(paths=[paths[i] for i in rows], **forward)
    return evidence, rows[kept]


def control_report(
    scores: dict[str, np.ndarray], splits: np.ndarray, margin: float = FLAG_MARGIN
) -> dict:
    """Per OOD set: each method's AUROC and FPR95 on the frame-only copies (×100), the
    method furthest from chance, and the plain-language flag when it lies beyond ``margin``.

    ``splits`` names the split of each controlled row (``id_test`` or ``ood:NAME``).
    """
    normal = splits == "id_test"
    sets: dict[str, dict] = {}
    for split in dict.fromkeys(s for s in splits if str(s).startswith("ood:")):
        rows = splits == split
        if not normal.any() or not rows.any():
            continue
        per_method = {
            m: {
                "auroc": round(auroc(v[normal], v[rows]), 2),
                "fpr95": round(100.0 * fpr95(v[normal], v[rows]), 2),
            }
            for m, v in scores.items()
        }
        worst = max(per_method, key=lambda m: abs(per_method[m]["auroc"] - 50.0))
        far = abs(per_method[worst]["auroc"] - 50.0)
        sets[split.split(":", 1)[1]] = {
            "methods": per_method,
            "furthest": worst,
            "furthest_auroc": per_method[worst]["auroc"],
            "flagged": bool(far > margin),
            "flag": FLAG_TEXT if far > margin else "",
            "images": int(rows.sum()),
        }
    return {"margin": margin, "id_test_images": int(normal.sum()), "sets": sets}
