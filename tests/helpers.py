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
