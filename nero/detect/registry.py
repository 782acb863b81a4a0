"""One registry of OOD methods, read by the command line, the report and the dashboard.

Every method: ``fit(train, head)`` on in-distribution training evidence, ``score(data)`` for
any samples, higher = more out-of-distribution. Feature-level methods work on the arrays of
the single extraction pass; methods that need input gradients say so with
``needs_inputs = True`` and implement ``score_inputs`` instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from nero.detect.detector import NERO
from nero.detect.relevance import Head, head_relevance_chunked


@dataclass(frozen=True)
class Evidence:
    """What one forward pass gives for a set of samples (rows aligned)."""

    features: np.ndarray  # N×D, input of the final linear layer
    logits: np.ndarray  # N×C
    relevance: np.ndarray | None = None  # N×(D+1), NERO's head relevance
    labels: np.ndarray | None = None  # class indices (training data only)

    def rows(self, index: np.ndarray) -> Evidence:
        pick = lambda a: None if a is None else np.asarray(a[index])  # noqa: E731
        return Evidence(
            pick(self.features), pick(self.logits), pick(self.relevance), pick(self.labels)
        )


class OODMethod(ABC):
    """Fit on ID training evidence, score anything; higher = more OOD."""

    name: ClassVar[str]
    label: ClassVar[str]  # how reports and the dashboard show it
    needs_inputs: ClassVar[bool] = False

    def fit(self, train: Evidence, head: Head) -> OODMethod:
        return self

    @abstractmethod
    def score(self, data: Evidence) -> np.ndarray: ...

    def score_inputs(self, model: Any, head: Any, loader: Any, device: Any) -> np.ndarray:
        """Scores from the images themselves (``needs_inputs`` methods only): ``loader``
        yields ``(images, index, ...)`` batches; rows follow ``index``."""
        raise NotImplementedError(f"{self.name} scores cached evidence, not inputs")


REGISTRY: dict[str, type[OODMethod]] = {}
M = TypeVar("M", bound=type[OODMethod])


def register(name: str, label: str | None = None) -> Callable[[M], M]:
    def wrap(cls: M) -> M:
        if name in REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        cls.label = label or name
        REGISTRY[name] = cls
        return cls

    return wrap


def _load_plugins() -> None:
    # Baselines register themselves on import; importing here keeps one table.
    import nero.detect.baselines  # noqa: F401


def available_methods() -> list[str]:
    _load_plugins()
    return list(REGISTRY)


def parse_methods(spec: str) -> list[str]:
    """``"all"`` or a comma list → validated names, NERO first when present."""
    names = available_methods()
    if spec.strip() == "all":
        chosen = names
    else:
        chosen = [s.strip().lower() for s in spec.split(",") if s.strip()]
        unknown = [c for c in chosen if c not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; available: {', '.join(names)}")
    return sorted(dict.fromkeys(chosen), key=lambda n: (n != "nero", names.index(n)))


def create_method(name: str, **params: Any) -> OODMethod:
    _load_plugins()
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(REGISTRY)}")
    return REGISTRY[name](**params)


@register("nero", "NERO")
class NeroMethod(OODMethod):
    """The NERO detector behind the common method interface."""

    def __init__(self, detector: NERO | None = None) -> None:
        self.detector = detector or NERO.from_preset("default")

    def fit(self, train: Evidence, head: Head) -> NeroMethod:
        if train.relevance is None or train.labels is None:
            raise ValueError("NERO needs relevance and labels of the training data")
        self.detector.fit(train.features, train.relevance, train.labels)
        return self

    def score(self, data: Evidence) -> np.ndarray:
        if data.relevance is None:
            raise ValueError("NERO needs relevance to score")
        return self.detector.score(data.features, data.relevance)


@register("nero_reference", "NERO (reference)")
class NeroReferenceMethod(OODMethod):
    """The release's NERO (``reference`` preset) next to the run's own, for comparison.

    Its relevance is recomputed from the features with the preset's own ε (0, plain LRP-0):
    a run stores relevance for its main detector, whose ε may differ.
    """

    def __init__(self) -> None:
        self.detector = NERO.from_preset("reference")

    def fit(self, train: Evidence, head: Head) -> NeroReferenceMethod:
        if train.labels is None:
            raise ValueError("NERO needs the labels of the training data")
        self.head_ = head
        self.detector.fit(train.features, self._relevance(train.features), train.labels)
        return self

    def score(self, data: Evidence) -> np.ndarray:
        return self.detector.score(data.features, self._relevance(data.features))

    def _relevance(self, features: np.ndarray) -> np.ndarray:
        return head_relevance_chunked(features, self.head_, self.detector.epsilon)
