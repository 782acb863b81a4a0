"""A tiny run made by the engine, shared by the dashboard, embedding and inference tests.

Import the fixtures a module uses by name (pytest finds them in the module's namespace):
``from tests.dashboard_fixtures import runs_root, tiny_data, tiny_run  # noqa: F401``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_RUN = "tiny"
CLASSES = {"alpha": (200, 60, 60), "beta": (60, 190, 70)}
N_TRAIN, N_TEST, N_OOD = 12, 6, 6
IMG_SIZE = 32
# A few fast methods of each kind (logit, feature distance); "all" would cost half a minute.
METHODS = ["nero", "msp", "energy", "maxlogit", "knn"]


def make_images(root: Path, seed: int = 0) -> Path:
    """Two colour classes (id_train / id_test) and two OOD sets: noise and blue squares."""
    rng = np.random.default_rng(seed)
    for split, n in (("id_train", N_TRAIN), ("id_test", N_TEST)):
        for cls, colour in CLASSES.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = np.clip(rng.normal(colour, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.png")
    noise = root / "ood" / "noise"
    noise.mkdir(parents=True, exist_ok=True)
    for i in range(N_OOD):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(noise / f"{i}.png")
    blue = root / "ood" / "blue"
    blue.mkdir(parents=True, exist_ok=True)
    for i in range(N_OOD):
        arr = np.zeros((40, 40, 3), np.uint8)
        arr[..., 2] = 180 + 10 * (i % 5)
        arr[8:30, 8:30] = (250, 250, 40)
        Image.fromarray(arr).save(blue / f"{i}.png")
    return root


def build_tiny_run(data: Path, out: Path, embedding: str = "pca") -> Path:
    """resnet18 at 32 px with random weights, a few methods, a PCA map (no numba compile)."""
    import torch

    from nero.data.folders import prepared_collection
    from nero.model.classifier import load_classifier
    from nero.run.embedding import ensure_embedding
    from nero.run.pipeline import EvaluateConfig, evaluate

    torch.manual_seed(0)  # random weights, but the same ones every time
    collection = prepared_collection(data)
    model = load_classifier("resnet18", None, len(collection.class_names), IMG_SIZE)
    config = EvaluateConfig(
        arch="resnet18",
        img_size=IMG_SIZE,
        methods=METHODS,
        progress_bar=False,
        batch_size=64,
        device="cpu",  # rescored on the CPU by the tests: the same arithmetic on any machine
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate(collection, model, config, out)
    ensure_embedding(out, method=embedding)
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_images(tmp_path_factory.mktemp("dash-data"))


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A runs root holding one complete run named ``tiny`` (no demo run)."""
    root = tmp_path_factory.mktemp("dash-runs")
    build_tiny_run(tiny_data, root / TINY_RUN)
    return root


@pytest.fixture(scope="session")
def tiny_run(runs_root: Path) -> Path:
    return runs_root / TINY_RUN
