"""What a run's manifest.json records: model, data, detector parameters, library versions."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from typing import Any

import numpy as np

from nero.data.folders import Collection
from nero.detect.detector import NERO
from nero.model.classifier import LoadedModel
from nero.run.directory import FORMAT_VERSION
from nero.run.settings import EvaluateConfig


def build_manifest(
    config: EvaluateConfig,
    model: LoadedModel,
    collection: Collection,
    detector: NERO,
    splits: np.ndarray,
    failures: dict[str, str],
    methods: list[str],
) -> dict[str, Any]:
    """The manifest of an evaluation (checkpoint and warnings are filled in by the writer)."""
    return {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "arch": config.arch,
            "checkpoint": None,
            "checkpoint_sha256": None,
            "class_names": collection.class_names,
            "head": {
                "name": model.head_name,
                "shape": [model.head.out_features, model.head.in_features],
            },
        },
        "data": {
            "splits": {
                s.name: {"root": str(s.root), "size": int((splits == s.name).sum())}
                for s in collection.splits
            },
            "unreadable": failures,
        },
        "preset": config.preset,
        "nero": {
            **detector.get_params(),
            "bias_scale": detector.bias_scale_,
            "norm_neurons_used": detector.norm_neurons_,
            "n_components_used": detector.n_components_,
        },
        "methods": methods,
        "img_size": config.img_size,
        # how each image became the model's input: from the checkpoint's sidecar, so the
        # model is fed as it was trained ("source" says where the record came from)
        "preprocessing": {**config.preprocessing.record(), "source": config.frame_source},
        "batch_size": config.batch_size,
        "engine": config.engine,
        "seed": config.seed,
        "versions": library_versions(),
    }


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
