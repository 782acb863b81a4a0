"""What a forward pass yields, whichever engine runs it: batches of features and logits, and
the recorder protocol for what watches the pass (the heatmaps' training envelope)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class BatchRecorder(Protocol):
    """Something that watches the forward pass (e.g. :class:`nero.explain.envelope.
    EnvelopeRecorder`): a context manager, told the labels of each batch after its forward.

    ``take``/``fold`` carry what one copy of the model saw to another (the Ray engine's
    actors record, the driver folds); a recorder is rebuilt as ``type(r)(model, n_classes)``.
    """

    n_classes: int

    def __enter__(self) -> object: ...

    def __exit__(self, *exc: object) -> None: ...

    def update(self, labels: np.ndarray) -> None: ...

    def take(self) -> dict[str, np.ndarray]: ...

    def fold(self, part: dict[str, np.ndarray]) -> None: ...


@dataclass
class ForwardBatch:
    """One batch of the forward pass, from either engine; unreadable rows hold zeros."""

    index: np.ndarray  # int64 rows into the path list
    features: np.ndarray  # B×D float32
    logits: np.ndarray  # B×C float32
    errors: list[str]  # "" for a readable image
    notes: list[str]  # what decoding changed, "" if nothing

    @property
    def good(self) -> np.ndarray:
        return np.array([not e for e in self.errors], bool)


def regroup(batches: Iterable[ForwardBatch], rows: int) -> Iterator[ForwardBatch]:
    """The same rows in batches of at least ``rows`` (the last may be smaller): scoring 19
    methods costs per call, so a streamed scorer works on blocks, not on forward batches."""
    held: list[ForwardBatch] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += len(batch.index)
        if count >= rows:
            yield _joined(held)
            held, count = [], 0
    if held:
        yield _joined(held)


def _joined(batches: list[ForwardBatch]) -> ForwardBatch:
    if len(batches) == 1:
        return batches[0]
    return ForwardBatch(
        np.concatenate([b.index for b in batches]),
        np.concatenate([b.features for b in batches]),
        np.concatenate([b.logits for b in batches]),
        [e for b in batches for e in b.errors],
        [v for b in batches for v in b.notes],
    )
