"""What a run's manifest.json records, typed: model, data, detector parameters, every method's
parameters, how images were fed, library versions. Written once by ``nero evaluate``; read
back as JSON by :func:`nero.run.directory.read_run` (older runs lack the newer keys)."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from nero.data.folders import Collection
from nero.detect.detector import NERO
from nero.model.classifier import LoadedModel
from nero.run.directory import FORMAT_VERSION
from nero.run.settings import EvaluateConfig


@dataclass(frozen=True)
class ModelRecord:
    """The classifier a run was made with."""

    arch: str
    checkpoint: str | None  # absolute path, or the run's own random weights (relative)
    checkpoint_sha256: str | None
    class_names: list[str]
    head: dict[str, Any]  # {"name": module name, "shape": [outputs, inputs]}


@dataclass(frozen=True)
class Manifest:
    """One run's manifest (``manifest.json``), section by section."""

    model: ModelRecord
    data: dict[str, Any]  # {"splits": {name: {"root", "size"}}, "unreadable": {path: why}}
    preset: str
    nero: dict[str, Any]  # the detector's parameters and what the fit used
    methods: list[str]
    method_params: dict[str, dict[str, Any]]  # each method's get_params()
    img_size: int
    # how each image became the model's input: from the checkpoint's sidecar, so the model
    # is fed as it was trained ("source" says where the record came from)
    preprocessing: dict[str, Any]
    batch_size: int
    engine: str
    seed: int
    versions: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    fusion: dict[str, Any] | None = None  # members, combination, why (when fused)
    format_version: int = FORMAT_VERSION
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    def record(self) -> dict[str, Any]:
        """As ``manifest.json`` holds it (the order of its keys kept from earlier versions)."""
        out = asdict(self)
        head = {"format_version": out.pop("format_version"), "created": out.pop("created")}
        fusion = out.pop("fusion")
        return {**head, **out, **({"fusion": fusion} if fusion is not None else {})}


def build_manifest(
    config: EvaluateConfig,
    model: LoadedModel,
    collection: Collection,
    detector: NERO,
    splits: np.ndarray,
    failures: dict[str, str],
    methods: list[str],
    method_params: dict[str, dict[str, Any]],
    checkpoint: str,
    checkpoint_sha256: str | None,
    warnings: list[str],
    fusion: dict[str, Any] | None = None,
) -> Manifest:
    """The manifest of an evaluation."""
    return Manifest(
        model=ModelRecord(
            arch=config.arch,
            checkpoint=checkpoint,
            checkpoint_sha256=checkpoint_sha256,
            class_names=collection.class_names,
            head={"name": model.head_name, "shape": list(model.head.weight.shape)},
        ),
        data={
            "splits": {
                s.name: {"root": str(s.root), "size": int((splits == s.name).sum())}
                for s in collection.splits
            },
            "unreadable": failures,
        },
        preset=config.preset,
        nero={
            **detector.get_params(),
            "bias_scale": detector.bias_scale_,
            "norm_neurons_used": detector.norm_neurons_,
            "n_components_used": detector.n_components_,
        },
        methods=methods,
        method_params=method_params,
        img_size=config.img_size,
        preprocessing={**config.preprocessing.record(), "source": config.frame_source},
        batch_size=config.batch_size,
        engine=config.engine,
        seed=config.seed,
        versions=library_versions(),
        warnings=warnings,
        fusion=fusion,
    )


def library_versions() -> dict[str, str]:
    import sklearn
    import torch
    import torchvision

    from nero import __version__

    return {
        "nero": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }
