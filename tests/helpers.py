"""Small shared test helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def random_pngs(folder: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """``count`` noise images of ``size``×``size`` px saved as ``0.png``, ``1.png``, …"""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def make_folders(root, n_train=10, n_test=5, size=24):
    rng = np.random.default_rng(0)
    colours = {"alpha": (200, 60, 60), "beta": (60, 200, 60)}
    for split, n in (("id_train", n_train), ("id_test", n_test)):
        for cls, col in colours.items():
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(rng.normal(col, 25, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    noise = root / "ood" / "noise"
    noise.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            noise / f"{i}.png"
        )
    gray = root / "ood" / "gray"
    gray.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((size, size), 40 * i, np.uint16)).save(gray / f"{i}.png")
    (noise / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


def evaluate_args(data, out, *extra: str) -> list[str]:
    """`nero evaluate` on a prepared folder with a random ResNet-18 at 32 px, no UMAP and no
    heatmap calibration (each costs seconds; their own tests make them)."""
    return [
        "evaluate",
        "--no-embedding",
        "--no-heatmap-scale",
        "--arch",
        "resnet18",
        "--data",
        str(data),
        "--img-size",
        "32",
        "--out",
        str(out),
        *extra,
    ]


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random 2-class ResNet-18 (32 px) saved as a state_dict, the same for a seed."""
    import torch

    from nero.model.classifier import build_model

    torch.manual_seed(seed)
    torch.save(build_model("resnet18", 2, 32).state_dict(), path)
    return path


def framed(path: Path) -> None:
    """A 64-px frame: a lit disc of tissue on an unlit surround."""
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 26**2
    img = np.zeros((64, 64, 3), np.uint8)
    img[disc] = (200, 90, 80)
    Image.fromarray(img).save(path)


def ood_map(run, index: int, where: str) -> None:
    """A cached 64-px OOD map of sample ``index`` with its evidence on the frame's corners
    (``frame``), in the middle of the tissue (``tissue``) or nowhere (``none``)."""
    from nero.explain.attribution import Heatmap
    from nero.run.heatmaps import cache_path

    relevance = np.zeros((64, 64), np.float32)  # where == "none": no evidence at all
    if where == "frame":
        relevance[:6, :6] = relevance[-6:, -6:] = 1.0  # the unlit corners
    elif where == "tissue":
        relevance[26:38, 26:38] = 1.0  # the middle of the tissue
    heat = Heatmap(relevance, "ood", None, 0, "lrp", "test", "", 1.0)
    path = cache_path(run, index, "ood", None)
    path.parent.mkdir(exist_ok=True)
    heat.save(path)
