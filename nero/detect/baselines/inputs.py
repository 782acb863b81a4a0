"""Methods that need the images themselves (input gradients), scored by ``score_inputs``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from nero.detect.baselines.common import (
    ODIN_EPSILON,
    ODIN_TEMPERATURE,
    pood_detectors,
    to_numpy,
)
from nero.detect.registry import Evidence, OODMethod, register


@register("odin", "ODIN")
class ODIN(OODMethod):
    """ODIN: one signed-gradient step on the input, then ``−max softmax(f(x′)/T)``.

    Liang et al., "Enhancing The Reliability of Out-of-distribution Image Detection in
    Neural Networks", ICLR 2018; spec §5: T = 100, ε = 0.0005, the step taken in the
    normalised input space (``norm_std`` rescales it per channel, as the ODIN code does).
    pytorch-ood ``ODIN``, run on whole batches (one forward, one input-gradient backward and
    one forward per batch).
    """

    needs_inputs = True

    def __init__(
        self,
        temperature: float = ODIN_TEMPERATURE,
        epsilon: float = ODIN_EPSILON,
        norm_std: list[float] | None = None,
    ) -> None:
        self.temperature = temperature
        self.epsilon = epsilon
        self.norm_std = norm_std

    def score(self, data: Evidence) -> np.ndarray:
        raise RuntimeError("ODIN needs the images: score it with score_inputs(model, ...)")

    def score_inputs(
        self, model: Any, head: Any, loader: Iterable, device: Any = "cpu"
    ) -> np.ndarray:
        """Scores of every sample the loader yields, in the order of its ``index``.

        ``loader`` yields ``(images, index, ...)`` batches (``nero.model.extract.make_loader``).
        """
        model = model.to(device).eval()
        detector = pood_detectors().ODIN(
            model, eps=self.epsilon, temperature=self.temperature, norm_std=self.norm_std
        )
        scores: dict[int, float] = {}
        for batch in loader:
            images, index = batch[0], np.asarray(batch[1])
            values = to_numpy(detector.predict(images.to(device)))
            scores.update(zip(index.tolist(), values.tolist(), strict=True))
        out = np.full(max(scores, default=-1) + 1, np.nan)
        out[list(scores)] = list(scores.values())
        return out
