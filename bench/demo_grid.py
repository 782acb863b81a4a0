"""Render a labelled grid of synthetic demo samples (every class and OOD kind).

Usage: python bench/demo_grid.py [--out assets/demo_samples.png] [--n 6] [--size 128]

Near-OOD masks are outlined in bright green. Samples are generated in memory with the
same per-image RNG as the dataset writer, so the grid shows real benchmark images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nero.data.demo_data import (
    FAR_OOD_KINDS,
    ID_CLASSES,
    NEAR_OOD_KINDS,
    DemoConfig,
    make_sample,
)

GREEN = np.array([0, 255, 0], np.uint8)


def _outline(img: np.ndarray, mask: np.ndarray, zoom: int) -> np.ndarray:
    """Upscale the image and draw the mask boundary as a 1 px green contour."""
    big = np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1)
    m = np.repeat(np.repeat(mask, zoom, axis=0), zoom, axis=1)
    edge = m & ~ndimage.binary_erosion(m)
    big = big.copy()
    big[edge] = GREEN
    return big


def _font(px: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1 has a fixed-size default font
        return ImageFont.load_default()


def build_grid(config: DemoConfig, n: int, zoom: int, outlines: bool = True) -> Image.Image:
    rows = [("id_test", c) for c in ID_CLASSES]
    rows += [("ood", k) for k in NEAR_OOD_KINDS + FAR_OOD_KINDS]
    tile = config.size * zoom
    label_w, pad = 150, 4
    grid = Image.new("RGB", (label_w + n * (tile + pad), len(rows) * (tile + pad)), (30, 30, 30))
    draw = ImageDraw.Draw(grid)
    font = _font(16)
    for r, (split, name) in enumerate(rows):
        top = r * (tile + pad)
        draw.text((8, top + tile // 2 - 10), name, fill=(235, 235, 235), font=font)
        draw.text((8, top + tile // 2 + 10), split, fill=(150, 150, 150), font=_font(12))
        for i in range(n):
            img, mask, background = make_sample(split, name, i, config)
            if mask is not None and outlines:
                tile_img = _outline(img, mask, zoom)
            else:
                tile_img = np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1)
            left = label_w + i * (tile + pad)
            grid.paste(Image.fromarray(tile_img), (left, top))
            if background is not None:
                draw.text(
                    (left + 4, top + 4), f"on {background}", fill=(255, 255, 0), font=_font(11)
                )
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("assets/demo_samples.png"))
    parser.add_argument("--n", type=int, default=6, help="samples per row")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--zoom", type=int, default=2, help="pixel upscaling for viewing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--artefact-scale", type=float, default=1.0)
    parser.add_argument("--no-outlines", action="store_true")
    args = parser.parse_args()
    config = DemoConfig(size=args.size, seed=args.seed, artefact_scale=args.artefact_scale)
    grid = build_grid(config, args.n, args.zoom, outlines=not args.no_outlines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out} ({grid.width}x{grid.height})")


if __name__ == "__main__":
    main()
