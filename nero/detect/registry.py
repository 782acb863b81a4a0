"""One registry of OOD methods, read by the command line, the report and the dashboard.

Every method: ``fit(train, head)`` on in-distribution training evidence, ``score(data)`` for
any samples, higher = more out-of-distribution. Feature-level methods work on the arrays of
the single extraction pass; methods that need input gradients say so with
``needs_inputs = True`` and implement ``score_inputs`` instead.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, TypeVar

import numpy as np

from nero.detect.relevance import Head


@dataclass(frozen=True)
class Evidence:
    """What one forward pass gives for a set of samples (rows aligned)."""

    features: np.ndarray  # N×D, input of the final linear layer
    logits: np.ndarray  # N×C
    relevance: np.ndarray | None = None  # N×(D+1), NERO's head relevance
    labels: np.ndarray | None = None  # class indices (training data only)

    def rows(self, index: np.ndarray) -> Evidence:
        """The given rows. A contiguous run of rows (a run's ``id_train`` usually is) gives
        read-only views, so a memory-mapped run is not copied; other indices copy."""
        index = np.asarray(index)
        first = int(index[0]) if index.size and index.dtype.kind in "iu" else None
        if first is not None and np.array_equal(index, np.arange(first, first + index.size)):
            index = slice(first, first + index.size)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            if a is None:
                return None
            part = np.asarray(a[index])
            if isinstance(index, slice):
                part = part.view()
                part.flags.writeable = False  # a view of the run's own arrays
            return part

        return Evidence(
            pick(self.features), pick(self.logits), pick(self.relevance), pick(self.labels)
        )


def capped_rows(labels: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """At most about ``cap`` row indices, every class in proportion (seeded); all rows if fewer."""
    labels = np.asarray(labels)
    if labels.size <= cap:
        return np.arange(labels.size)
    rng = np.random.default_rng(seed)
    keep = []
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        take = min(rows.size, max(1, round(cap * rows.size / labels.size)))
        keep.append(rng.choice(rows, take, replace=False))
    return np.sort(np.concatenate(keep))


class OODMethod(ABC):
    """Fit on ID training evidence, score anything; higher = more OOD."""

    name: ClassVar[str]
    label: ClassVar[str]  # how reports and the dashboard show it
    needs_inputs: ClassVar[bool] = False

    def fit(self, train: Evidence, head: Head) -> OODMethod:
        return self

    @abstractmethod
    def score(self, data: Evidence) -> np.ndarray: ...

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters as set (scikit-learn's convention), as plain JSON
        values: what a run's manifest records of the method."""
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return {n: _plain(getattr(self, n)) for n in names if hasattr(self, n)}

    def score_inputs(self, model: Any, head: Any, loader: Any, device: Any) -> np.ndarray:
        """Scores from the images themselves (``needs_inputs`` methods only): ``loader``
        yields ``(images, index, ...)`` batches; rows follow ``index``."""
        raise NotImplementedError(f"{self.name} scores cached evidence, not inputs")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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


# The modules whose classes register themselves: an explicit list of names, so the registry
# imports no plugin and no plugin list by module (other packages add theirs through the
# "nero.methods" entry-point group). Order = the order reports list methods in.
BUILTIN_PLUGINS = (
    "nero.detect.nero_methods",
    "nero.detect.baselines.logits",
    "nero.detect.baselines.distances",
    "nero.detect.baselines.subspace",
    "nero.detect.baselines.shaping",
    "nero.detect.baselines.inputs",
)
ENTRY_POINT_GROUP = "nero.methods"


@functools.cache
def _load_plugins() -> None:
    for module in BUILTIN_PLUGINS:
        importlib.import_module(module)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()


def available_methods() -> list[str]:
    _load_plugins()
    return list(REGISTRY)


def feature_level_methods() -> list[str]:
    """Methods that score from the cached forward pass alone (no input gradients)."""
    return [m for m in available_methods() if not REGISTRY[m].needs_inputs]


# Scores a run derives from its methods' scores (nero.run.conformal), not registered methods.
DERIVED_LABELS = {"fusion": "Fusion (calibrated p-values)"}


def method_label(name: str) -> str:
    """How reports and the dashboard show a method (its name, if it is not registered)."""
    _load_plugins()
    cls = REGISTRY.get(name)
    return cls.label if cls is not None else DERIVED_LABELS.get(name, name)


def method_class(name: str) -> type[OODMethod]:
    """The registered class of ``name`` (its label, ``needs_inputs``, …)."""
    _load_plugins()
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(REGISTRY)}")
    return REGISTRY[name]


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
    return method_class(name)(**params)
