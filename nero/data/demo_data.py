"""Synthetic endoscopy-like OOD benchmark (deterministic, numpy + Pillow only).

Real endoscopy data (e.g. Kvasir) cannot always be downloaded, so NERO ships this
generator. It renders three classes of normal anatomy as in-distribution data, near-OOD
images in which an artefact (polyp, dye, blood, instrument) is inserted into an
in-distribution scene together with a pixel mask of the inserted region, and far-OOD
images that are not endoscopy at all.

Every image is drawn from its own RNG derived from (seed, split, class, index), so the
output does not depend on generation order and the same seed gives identical bytes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

SOURCE = "nero-synthetic-endoscopy"
VERSION = 2  # 2: real frames' nuisances in every frame; the bowel-content OOD kind

ID_CLASSES: tuple[str, ...] = ("cecum", "pylorus", "z-line")
NEAR_OOD_KINDS: tuple[str, ...] = ("polyp", "blue-dye", "bleeding", "instrument", "bowel-content")
FAR_OOD_KINDS: tuple[str, ...] = ("non-endoscopy",)

# Radius of the circular field of view as a fraction of the image side. Fixed for every
# endoscopy image so the FOV itself carries no class information.
FOV_RADIUS_FRAC = 0.47
JPEG_QUALITY = 95

# Artefact area as a fraction of the FOV at artefact_scale=1 (drawn log-uniformly).
_AREA_RANGE = (0.03, 0.13)

# Nuisances of real frames, drawn with the same odds in every frame whatever its class or
# OOD kind (so a detector or heatmap that keys on them fails the demo as it fails real data):
# an octagonal field of view, burnt-in text in the black border, a green position-marker
# thumbnail, strong specular highlights, and a little bowel content.
OCTAGON_P = 0.5
TEXT_P = 0.7
MARKER_P = 0.3
HIGHLIGHT_P = 0.5
CONTENT_P = 0.35
CONTENT_AREA = (0.01, 0.05)  # of the FOV; the bowel-content OOD kind goes far beyond it
HEAVY_CONTENT_AREA = (0.15, 0.35)
MARKER_GREEN = (40, 190, 80)

FloatArray = np.ndarray
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DemoConfig:
    """Size and seed of a generated benchmark.

    ``artefact_scale`` multiplies the linear size and the contrast of near-OOD artefacts:
    below 1 makes near-OOD harder to detect, above 1 easier.
    """

    size: int = 128
    n_train_per_class: int = 300
    n_test_per_class: int = 100
    n_ood_per_kind: int = 100
    seed: int = 0
    artefact_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ValueError(f"size must be >= 32, got {self.size}")
        for name in ("n_train_per_class", "n_test_per_class", "n_ood_per_kind"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not self.artefact_scale > 0:
            raise ValueError("artefact_scale must be > 0")


# --------------------------------------------------------------------------------------
# Small numeric helpers
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[FloatArray, FloatArray]:
    """Pixel-centre coordinates in FOV units: the FOV is the unit disk, y points down."""
    centre = (size - 1) / 2.0
    ax = (np.arange(size, dtype=np.float32) - centre) / np.float32(FOV_RADIUS_FRAC * size)
    y, x = np.meshgrid(ax, ax, indexing="ij")
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _px(size: int) -> float:
    """Length of one pixel in FOV units."""
    return 1.0 / (FOV_RADIUS_FRAC * size)


def fov_mask(size: int) -> np.ndarray:
    """Boolean mask of the circular field of view shared by all endoscopy images."""
    x, y = _grid(size)
    return (x * x + y * y) <= 1.0


def _fov_soft(size: int, octagon: tuple[float, float] | None = None) -> FloatArray:
    """Anti-aliased FOV (1 px edge) so the border is not jagged.

    ``octagon=(half_width, corner)``: the octagonal field of view of many endoscopes,
    ``|x|, |y| ≤ half_width`` and ``|x| + |y| ≤ corner`` (FOV units; it contains the disk).
    """
    x, y = _grid(size)
    if octagon is None:
        edge = 1.0 - np.sqrt(x * x + y * y)
    else:
        half, corner = octagon
        edge = np.minimum(
            half - np.maximum(np.abs(x), np.abs(y)), (corner - np.abs(x) - np.abs(y)) / math.sqrt(2)
        )
    return np.clip(edge / _px(size) + 0.5, 0.0, 1.0)


def _smoothstep(e0: float, e1: float, v: FloatArray) -> FloatArray:
    t = np.clip((v - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@lru_cache(maxsize=64)
def _upsampler(size: int, cells: int) -> tuple[FloatArray, FloatArray]:
    """Smooth interpolation matrix (size x cells+1) and the per-pixel std it produces.

    Upsampling a small random grid as A @ G @ A.T is far cheaper than filtering full-size
    white noise; Gaussian weights avoid the grid artefacts of bilinear interpolation.
    """
    pos = np.linspace(0.0, cells, size)[:, None]
    weights = np.exp(-0.5 * ((pos - np.arange(cells + 1)[None, :]) / 0.6) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)
    row_std = np.sqrt((weights**2).sum(axis=1))
    inv_std = 1.0 / (row_std[:, None] * row_std[None, :])
    a = weights.astype(np.float32)
    inv = inv_std.astype(np.float32)
    a.flags.writeable = False
    inv.flags.writeable = False
    return a, inv


def _matmul(a: FloatArray, b: FloatArray) -> FloatArray:
    """a @ b in row blocks small enough that OpenBLAS stays single-threaded: on a busy
    2-core machine its threads made these tiny products ~50x slower."""
    m, k = a.shape
    rows = max(1, 300_000 // (k * b.shape[1]))
    if rows >= m:
        return a @ b
    return np.concatenate([a[i : i + rows] @ b for i in range(0, m, rows)])


def _noise(rng: np.random.Generator, size: int, cells: int) -> FloatArray:
    """Smooth zero-mean, unit-variance noise with about ``cells`` features across."""
    cells = max(2, int(cells))
    a, inv_std = _upsampler(size, cells)
    grid = rng.standard_normal((cells + 1, cells + 1), dtype=np.float32)
    return _matmul(a, _matmul(grid, a.T)) * inv_std


def _fbm(rng: np.random.Generator, size: int, cells: tuple[int, ...]) -> FloatArray:
    """Multi-octave noise, each octave at half the amplitude of the previous one."""
    out = np.zeros((size, size), np.float32)
    for i, c in enumerate(cells):
        out += _noise(rng, size, c) * (0.5**i)
    return out / out.std()


def _rotate(
    x: FloatArray, y: FloatArray, cx: float, cy: float, angle: float
) -> tuple[FloatArray, FloatArray]:
    """Coordinates relative to (cx, cy), rotated by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    return c * dx + s * dy, -s * dx + c * dy


def _point_in_disk(rng: np.random.Generator, radius: float) -> tuple[float, float]:
    r = radius * np.sqrt(rng.uniform())
    a = rng.uniform(0, 2 * np.pi)
    return float(r * np.cos(a)), float(r * np.sin(a))


def _polar_about(
    rng: np.random.Generator, size: int, radius: float
) -> tuple[FloatArray, FloatArray, tuple[float, float]]:
    """Every pixel's distance and angle from a random centre within ``radius``, and it."""
    x, y = _grid(size)
    ox, oy = _point_in_disk(rng, radius)
    dx, dy = x - ox, y - oy
    return np.sqrt(dx * dx + dy * dy), np.arctan2(dy, dx), (ox, oy)


def _to_uint8(img: FloatArray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------
# Vessels
# --------------------------------------------------------------------------------------


def _vessels(
    rng: np.random.Generator,
    size: int,
    n_trees: int,
    width: float,
    starts: list[tuple[float, float, float]] | None = None,
    wiggle: float = 0.35,
    branch_p: float = 0.12,
) -> FloatArray:
    """Branching vessel map in [0, 1], drawn as random-walk trees.

    ``starts`` are (x, y, angle) in FOV units; random when omitted. Trees grow one
    generation at a time (trunks, branches, twigs) so each generation's random walks are
    computed in one vectorised step. Drawing with Pillow at 2x and downsampling gives
    anti-aliased lines much faster than distance fields.
    """
    ss = 2
    scale = FOV_RADIUS_FRAC * size * ss
    centre = (size * ss - 1) / 2.0
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    step = 0.06
    if starts is None:
        r = np.sqrt(rng.uniform(size=n_trees))
        a = rng.uniform(0, 2 * np.pi, size=n_trees)
        starts_arr = np.stack([r * np.cos(a), r * np.sin(a), rng.uniform(0, 2 * np.pi, n_trees)], 1)
    else:
        starts_arr = np.asarray(starts, dtype=np.float64).reshape(-1, 3)
    x0, y0, a0 = starts_arr[:, 0], starts_arr[:, 1], starts_arr[:, 2]
    w = width * rng.uniform(0.7, 1.3, size=len(x0))
    for gen, (n, inten) in enumerate(((18, 255), (10, 200), (6, 160))):
        m = len(x0)
        if m == 0:
            break
        angles = a0[:, None] + np.cumsum(rng.normal(0.0, wiggle, (m, n)), axis=1)
        zero = np.zeros((m, 1))
        px = x0[:, None] + step * np.concatenate([zero, np.cumsum(np.cos(angles), 1)], 1)
        py = y0[:, None] + step * np.concatenate([zero, np.cumsum(np.sin(angles), 1)], 1)
        lengths = rng.integers(n // 2, n + 1, size=m)
        qx, qy = centre + px * scale, centre + py * scale
        for b in range(m):
            end = lengths[b] + 1
            pts = list(zip(qx[b, :end].tolist(), qy[b, :end].tolist(), strict=True))
            draw.line(pts, fill=inten, width=max(1, round(w[b] * ss)), joint="curve")
        if gen == 2:
            break
        # Side branches sprout at random points of the walk, at most 24 per generation.
        sprout = (rng.uniform(size=(m, n)) < branch_p) & (np.arange(n)[None, :] < lengths[:, None])
        bi, bj = np.nonzero(sprout)
        bi, bj = bi[:24], bj[:24]
        side = np.where(rng.uniform(size=len(bi)) < 0.5, -1.0, 1.0)
        x0, y0 = px[bi, bj + 1], py[bi, bj + 1]
        a0 = angles[bi, bj] + side * rng.uniform(0.4, 1.1, size=len(bi))
        w = w[bi] * 0.65
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


# --------------------------------------------------------------------------------------
# Scene geometry per class: height field (for shading), albedo and illumination
# --------------------------------------------------------------------------------------


@dataclass
class _Scene:
    height: FloatArray  # surface height towards the camera, FOV units
    albedo: FloatArray  # HxWx3 in [0, 1]
    illum: FloatArray  # light fall-off with depth (dark lumen), [0, 1]
    vessels: FloatArray  # vessel density, [0, 1]


def _tube_illum(d: FloatArray, d0: float) -> FloatArray:
    """Light fall-off for a view down a tube: the wall at image distance d from the lumen
    lies at depth ~1/d, and brightness ~ 1/depth^2 ~ d^2."""
    d2 = d * d
    return d2 / (d2 + d0 * d0)


def _mucosa_colour(rng: np.random.Generator, base: tuple[float, float, float]) -> np.ndarray:
    # Shift brightness and warmth together so colours stay plausible (no green mucosa).
    col = np.asarray(base, np.float32) * np.float32(rng.uniform(0.92, 1.06))
    warm = np.float32(rng.normal(0.0, 0.03))
    col = col + np.array([0.5, -0.5, -0.6], np.float32) * warm
    col = col + rng.normal(0.0, 0.012, size=3).astype(np.float32)
    return np.clip(col, 0.0, 1.0)


def _scene_cecum(rng: np.random.Generator, size: int) -> _Scene:
    """Blind pouch: crescent semilunar folds arching around a slit-like orifice."""
    x, y = _grid(size)
    ox, oy = _point_in_disk(rng, 0.45)
    rot = rng.uniform(0, 2 * np.pi)
    # Folds open away from the orifice towards a common direction, like stacked crescents.
    open_dir = rot + rng.normal(0, 0.3)
    height = np.zeros_like(x)
    n_folds = int(rng.integers(3, 6))
    r = rng.uniform(0.18, 0.3)
    for _ in range(n_folds):
        cx = ox + rng.normal(0, 0.08) - 0.15 * r * math.cos(open_dir)
        cy = oy + rng.normal(0, 0.08) - 0.15 * r * math.sin(open_dir)
        dx, dy = x - cx, y - cy
        dist = np.sqrt(dx * dx + dy * dy)
        half = rng.uniform(0.45, 0.85) * np.pi  # angular half-extent of the crescent
        centre_ang = open_dir + np.pi + rng.normal(0, 0.35)
        # cos(angle - centre_ang) without arctan2: a dot product with the unit direction.
        cos_rel = (dx * math.cos(centre_ang) + dy * math.sin(centre_ang)) / (dist + 1e-6)
        window = _smoothstep(math.cos(half), math.cos(half) + 0.35, cos_rel)
        w = rng.uniform(0.035, 0.07) * (1 + r)
        # Semilunar folds are steep on the inner side and slope gently outwards.
        t = (dist - r) / w
        profile = np.exp(-np.where(t < 0, 4.0, 0.6) * t * t)
        height += rng.uniform(0.05, 0.09) * profile * window
        r += rng.uniform(0.18, 0.3)

    # Appendiceal orifice: small curved dark slit.
    u, v = _rotate(x, y, ox, oy, rot + rng.normal(0, 0.5))
    slit_len = rng.uniform(0.06, 0.13)
    v = v + rng.uniform(-2.0, 2.0) * u * u  # bend into a crescent
    slit = np.exp(-(((u / slit_len) ** 2 + (v / (slit_len * rng.uniform(0.15, 0.3))) ** 2) ** 2))
    height -= 0.04 * slit

    # Pouch: gently bowl-shaped, lit fairly evenly, darker on one side.
    gdir = rng.uniform(0, 2 * np.pi)
    grad = x * math.cos(gdir) + y * math.sin(gdir)
    bx, by = _point_in_disk(rng, 1.2)
    height += 0.3 * ((x - bx) ** 2 + (y - by) ** 2) * rng.uniform(0.6, 1.2)
    illum = np.clip(0.85 + 0.2 * grad * rng.uniform(0.5, 1.2), 0.3, 1.0)
    illum = illum * (1.0 - 0.92 * slit)

    col = _mucosa_colour(rng, (0.93, 0.62, 0.52))
    tex = _fbm(rng, size, (6, 14, 30))
    albedo = col[None, None, :] * (1.0 + 0.05 * tex)[..., None]
    vessels = _vessels(rng, size, int(rng.integers(4, 8)), width=rng.uniform(0.9, 1.6))
    return _Scene(height, albedo, illum, vessels)


def _scene_pylorus(rng: np.random.Generator, size: int) -> _Scene:
    """Antrum funnelling into a dark round pyloric opening with radial folds."""
    d, ang, _ = _polar_about(rng, size, 0.35)
    ro = rng.uniform(0.08, 0.17)
    # Puckered opening: radius varies with angle.
    k = int(rng.integers(4, 9))
    pucker = 1.0 + rng.uniform(0.05, 0.2) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
    d_rel = d / (ro * pucker)
    opening = 1.0 - _smoothstep(0.7, 1.15, d_rel)

    # Radial folds converging on the opening; a noise phase makes them wander.
    n = int(rng.integers(5, 11))
    wander = _noise(rng, size, 4) * rng.uniform(0.6, 1.4)
    folds = np.maximum(np.cos(n * ang + rng.uniform(0, 2 * np.pi) + wander), 0.0) ** 3
    envelope = _smoothstep(0.9, 1.6, d_rel) * (1.0 - _smoothstep(0.5, 1.1, d))
    height = rng.uniform(0.03, 0.06) * folds * envelope
    # Sphincter ring raised around the opening.
    ring_r = rng.uniform(1.4, 1.9)
    height += rng.uniform(0.04, 0.07) * np.exp(-(((d_rel - ring_r) / 0.45) ** 2))
    height += 0.35 * d  # funnel
    height -= 0.05 * opening

    illum = 0.45 + 0.55 * _tube_illum(d, rng.uniform(0.25, 0.45))
    illum = illum * (1.0 - 0.95 * opening)

    col = _mucosa_colour(rng, (0.92, 0.52, 0.42))
    tex = _fbm(rng, size, (5, 12))
    albedo = col[None, None, :] * (1.0 + 0.04 * tex)[..., None]
    # Gastric mucosa shows few vessels.
    vessels = _vessels(rng, size, int(rng.integers(0, 3)), width=rng.uniform(0.7, 1.1)) * 0.5
    return _Scene(height, albedo, illum, vessels)


def _scene_zline(rng: np.random.Generator, size: int) -> _Scene:
    """Distal oesophagus: pale squamous mucosa meeting red gastric mucosa along a serrated
    ring around the dark lumen."""
    d, ang, (ox, oy) = _polar_about(rng, size, 0.3)
    d0 = rng.uniform(0.18, 0.32)
    rz = rng.uniform(0.3, 0.55)
    # Serrated boundary: a fine zig-zag plus a few tongues of red reaching outwards.
    k = int(rng.integers(7, 16))
    bound = 1.0 + rng.uniform(0.04, 0.12) * np.abs(np.sin(0.5 * k * ang + rng.uniform(0, 6.3)))
    for _ in range(int(rng.integers(1, 5))):
        a0 = rng.uniform(0, 2 * np.pi)
        width = rng.uniform(0.12, 0.35)
        dang = (ang - a0 + np.pi) % (2 * np.pi) - np.pi  # wrapped to [-pi, pi)
        bound += rng.uniform(0.15, 0.6) * np.exp(-((dang / width) ** 2))
    bound = bound + 0.06 * _noise(rng, size, 8) + 0.03 * _noise(rng, size, 24)
    red = 1.0 - _smoothstep(0.93, 1.07, d / (rz * bound))

    pale = _mucosa_colour(rng, (0.90, 0.71, 0.67))
    gastric = _mucosa_colour(rng, (0.84, 0.33, 0.27))
    # Gastric side is granular and blotchy; squamous side smooth and slightly glassy.
    blotch = _fbm(rng, size, (8, 20, 40))
    albedo = pale[None, None, :] * (1.0 + 0.03 * blotch)[..., None] * (1.0 - red[..., None])
    gran = _noise(rng, size, 40)
    albedo += gastric * ((1.0 + 0.1 * blotch + 0.06 * gran) * red)[..., None]

    # Longitudinal folds of the oesophagus run towards the lumen; rugae on the red side.
    n = int(rng.integers(4, 9))
    folds = np.cos(n * ang + rng.uniform(0, 6.3) + 0.8 * _noise(rng, size, 4))
    height = rng.uniform(0.025, 0.05) * folds * _smoothstep(0.0, 0.5, d) + 0.2 * d
    height += 0.008 * _fbm(rng, size, (10, 20)) * red
    illum = 0.04 + 0.96 * _tube_illum(d, d0)

    # Palisade vessels: thin, running radially towards the lumen in the pale zone.
    starts = []
    for _ in range(int(rng.integers(4, 10))):
        a = rng.uniform(0, 2 * np.pi)
        rr = rng.uniform(0.85, 1.05)
        sx, sy = math.cos(a) * rr, math.sin(a) * rr
        starts.append((sx, sy, float(np.arctan2(oy - sy, ox - sx))))
    vessels = _vessels(
        rng, size, 0, width=rng.uniform(0.6, 1.0), starts=starts, wiggle=0.12, branch_p=0.1
    )
    vessels = vessels * (1.0 - red) * 0.8
    return _Scene(height, albedo, illum, vessels)


_SCENES: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    "cecum": _scene_cecum,
    "pylorus": _scene_pylorus,
    "z-line": _scene_zline,
}


# --------------------------------------------------------------------------------------
# Shading and camera
# --------------------------------------------------------------------------------------


def _shade(
    rng: np.random.Generator, height: FloatArray, size: int
) -> tuple[FloatArray, FloatArray]:
    """Diffuse and specular terms for a light at the camera (slightly off axis)."""
    gy, gx = np.gradient(height, _px(size))
    lx, ly = (float(v) for v in rng.normal(0.0, 0.15, size=2))
    norm = np.sqrt(1.0 + gx * gx + gy * gy)
    diffuse = np.clip((1.0 - gx * lx - gy * ly) / (norm * math.sqrt(1 + lx * lx + ly * ly)), 0, 1)
    # Wet mucosa mirrors the light where the surface faces the camera: a Gaussian lobe in
    # slope space gives small blobs where fold slopes cancel the overall tilt.
    hx, hy = gx + lx / 2, gy + ly / 2
    spec = np.exp(-(hx * hx + hy * hy) / rng.uniform(0.002, 0.006))
    return diffuse, spec


@lru_cache(maxsize=8)
def _vignette(size: int) -> FloatArray:
    """Light cone fading towards the FOV border."""
    x, y = _grid(size)
    r2 = x * x + y * y
    v = 1.0 - 0.45 * r2 * r2
    v.flags.writeable = False
    return v


def _camera(
    rng: np.random.Generator,
    img: FloatArray,
    size: int,
    fov: bool,
    octagon: tuple[float, float] | None = None,
) -> np.ndarray:
    """Colour jitter, sensor grain, gamma, black border outside the FOV and lens blur."""
    gains = (1.0 + rng.normal(0.0, 0.025, size=3)) * rng.uniform(0.85, 1.12)
    img = img * gains.astype(np.float32)[None, None, :]
    # Luminance-only grain: a third of the random draws of per-channel noise.
    img = img + 0.01 * rng.standard_normal((size, size, 1), dtype=np.float32)
    if fov:
        img = img * _fov_soft(size, octagon)[..., None]
    # Gamma through a lookup table: much cheaper than a float power, and keeps black black.
    gamma = rng.uniform(0.9, 1.1)
    lut = _to_uint8((np.arange(256, dtype=np.float32) / 255.0) ** gamma)
    out = Image.fromarray(lut[_to_uint8(img)])
    # Pillow's blur on uint8 is several times faster than a float Gaussian filter.
    sigma = rng.uniform(0.4, 0.8) * size / 128.0
    return np.asarray(out.filter(ImageFilter.GaussianBlur(sigma)))


def render_scene(cls: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Render one in-distribution endoscopy frame of class ``cls`` as HxWx3 uint8."""
    if cls not in _SCENES:
        raise ValueError(f"unknown class {cls!r}; expected one of {ID_CLASSES}")
    scene = _SCENES[cls](rng, size)
    x, y = _grid(size)
    # Broad undulation plus a fine bumpy surface, so highlights break up into small blobs
    # as on wet mucosa instead of following the geometry exactly.
    undulation = _fbm(rng, size, (3, 6)) * rng.uniform(0.01, 0.03)
    micro = _fbm(rng, size, (20, 40)) * (0.003 * 128 / size)
    diffuse, spec = _shade(rng, scene.height + undulation + micro, size)
    vessel_tint = np.array([0.72, 0.55, 0.62], np.float32)
    strength = rng.uniform(0.4, 0.8)
    albedo = scene.albedo * (1.0 - strength * scene.vessels[..., None] * (1.0 - vessel_tint))
    # The scope is rarely centred: one side of the wall is nearer and brighter.
    side = rng.uniform(0, 2 * np.pi)
    tilt = 1.0 + rng.uniform(0.0, 0.3) * (x * math.cos(side) + y * math.sin(side))
    light = scene.illum * _vignette(size) * tilt
    if rng.uniform() < CONTENT_P:
        content, alpha = _bowel_content(rng, size, CONTENT_AREA)
        albedo = albedo * (1 - alpha[..., None]) + content * alpha[..., None]
    img = albedo * ((0.35 + 0.75 * diffuse) * light)[..., None]
    gloss = 0.7
    if rng.uniform() < HIGHLIGHT_P:  # a wet, close wall: large saturated reflections
        gloss = rng.uniform(1.5, 3.0)
        spec = np.maximum(spec, _highlight_spots(rng, size))
    img += (gloss * spec * light)[..., None] * np.array([1.0, 0.97, 0.95], np.float32)
    octagon = None
    if rng.uniform() < OCTAGON_P:
        octagon = (rng.uniform(0.98, 1.06), rng.uniform(1.25, 1.4))
    return _camera(rng, img.astype(np.float32, copy=False), size, fov=True, octagon=octagon)


def _highlight_spots(rng: np.random.Generator, size: int) -> FloatArray:
    """A few small, sharp specular spots (light mirrored by mucus), in [0, 1]."""
    x, y = _grid(size)
    spots = np.zeros_like(x)
    for _ in range(int(rng.integers(2, 7))):
        cx, cy = _point_in_disk(rng, 0.85)
        r = rng.uniform(0.015, 0.05)
        e = rng.uniform(1.0, 3.0)
        u, v = _rotate(x, y, cx, cy, rng.uniform(0, np.pi))
        spots = np.maximum(spots, np.exp(-(((u / (r * e)) ** 2 + (v / r) ** 2) ** 2)))
    return spots


def _bowel_content(
    rng: np.random.Generator, size: int, area_range: tuple[float, float]
) -> tuple[FloatArray, FloatArray]:
    """Brownish-yellow stool or turbid fluid on the wall: its colour field and coverage."""
    lo, hi = np.log(area_range[0]), np.log(area_range[1])
    area = float(np.exp(rng.uniform(lo, hi)))
    d, _, _ = _blob(rng, size, area, rng.uniform(1.0, 2.5), rng.uniform(0.2, 0.35))
    alpha = _alpha(d, size, 3.0, math.sqrt(area)) * np.float32(0.75 + 0.25 * rng.uniform())
    colour = np.array([0.55, 0.37, 0.15], np.float32) * np.float32(rng.uniform(0.8, 1.15))
    texture = 1.0 + 0.25 * _fbm(rng, size, (8, 16, 32))
    return colour[None, None, :] * texture[..., None], alpha


# --------------------------------------------------------------------------------------
# Near-OOD artefacts
# --------------------------------------------------------------------------------------


# An artefact returns the composited image and its soft coverage (alpha) in [0, 1].
_Layer = tuple[FloatArray, FloatArray]


def _blob(
    rng: np.random.Generator,
    size: int,
    area: float,
    elong: float,
    irregular: float,
    centre: tuple[float, float] | None = None,
    angle: float | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Irregular ellipse of about ``area`` (fraction of the FOV).

    Returns the normalised radial distance (1 at the border) and the local coordinates
    (u along the major axis, v across, both in units of the semi-axes).
    """
    x, y = _grid(size)
    radius = math.sqrt(area)  # FOV is the unit disk: area fraction = r^2 for a circle
    a, b = radius * math.sqrt(elong), radius / math.sqrt(elong)
    if centre is None:
        # Keep the centre far enough inside that most of the blob lies in the FOV.
        centre = _point_in_disk(rng, max(0.05, 0.85 - 0.5 * a))
    if angle is None:
        angle = rng.uniform(0, 2 * np.pi)
    u, v = _rotate(x, y, centre[0], centre[1], angle)
    u, v = u / a, v / b
    d = np.sqrt(u * u + v * v)
    d = d * (1.0 + irregular * _noise(rng, size, 6))
    return d, u, v


def _alpha(d: FloatArray, size: int, edge_px: float, radius: float) -> FloatArray:
    """Soft inside-ness from a normalised distance, with an edge about ``edge_px`` wide."""
    edge = max(edge_px * _px(size) / max(radius, 1e-3), 1e-3)
    return np.clip((1.0 - d) / edge + 0.5, 0.0, 1.0)


def _local_mean(img: FloatArray, weight: FloatArray) -> np.ndarray:
    w = weight[..., None]
    return (img * w).sum(axis=(0, 1)) / max(float(w.sum()), 1e-6)


def _polyp(rng: np.random.Generator, img: FloatArray, size: int, scale: float) -> _Layer:
    """Sessile polyp: a shaded, slightly redder dome with its own texture and a highlight."""
    area = _draw_area(rng, scale) * 1.25  # round and compact: needs area to be seen
    d, _, _ = _blob(rng, size, area, rng.uniform(1.0, 1.6), rng.uniform(0.03, 0.1))
    radius = math.sqrt(area)
    contrast = _draw_contrast(rng, 0.5, 1.0, scale)
    inside = np.clip(1.0 - d * d, 0.0, 1.0)
    # Paraboloid dome (finite slope at the rim, so the rim shades darker) with lobules.
    lobes = 1.0 + 0.15 * _noise(rng, size, 10)
    height = radius * rng.uniform(0.5, 1.3) * contrast * inside * lobes
    height = height + 0.002 * _fbm(rng, size, (24, 48))
    diffuse, spec = _shade(rng, height, size)
    alpha = _alpha(d, size, 2.5, radius)
    base = _local_mean(img, alpha)
    tint = 1.0 + contrast * np.array([0.12, -0.2, -0.16], np.float32)
    # Own fine texture instead of the background folds, plus a hint of the background so
    # weak polyps blend in.
    tex = 1.0 + 0.06 * _fbm(rng, size, (10, 20))
    own = base * tint * tex[..., None]
    mix = 0.6 + 0.4 * contrast
    surface = own * mix + img * (1 - mix)
    polyp = surface * (0.45 + 0.65 * diffuse[..., None])
    polyp = polyp + (0.7 * contrast * spec * inside)[..., None]
    # Contact shadow just outside the base.
    shadow = 1.0 - 0.3 * contrast * np.exp(-(((d - 1.0) / 0.15) ** 2)) * (d > 1.0)
    out = img * shadow[..., None]
    return out * (1 - alpha[..., None]) + polyp * alpha[..., None], alpha


def _blue_dye(rng: np.random.Generator, img: FloatArray, size: int, scale: float) -> _Layer:
    """Indigo-carmine chromoendoscopy stain that pools in the mucosal grooves."""
    area = _draw_area(rng, scale) * 1.3
    d, _, _ = _blob(rng, size, area, rng.uniform(1.0, 2.5), rng.uniform(0.15, 0.3))
    contrast = _draw_contrast(rng, 0.4, 1.0, scale)
    alpha = _alpha(d, size, 5.0, math.sqrt(area))  # dye diffuses: soft border
    lum = img.mean(axis=2)
    # Indigo carmine pools in grooves (pixels darker than their surroundings) and is
    # patchy. Applied as absorption, so the mucosal texture shows through the stain.
    groove = np.clip((ndimage.gaussian_filter(lum, 2.0 * size / 128) - lum) * 8.0, 0.0, 1.0)
    thickness = alpha * contrast * (0.8 + 0.2 * _noise(rng, size, 12) + 1.2 * groove)
    absorb = np.array([1.7, 1.05, 0.15], np.float32)  # red absorbed most: blue stain
    return img * np.exp(-np.maximum(thickness, 0.0)[..., None] * absorb), alpha


def _bleeding(rng: np.random.Generator, img: FloatArray, size: int, scale: float) -> _Layer:
    """Blood running down the wall: a deep-red, partly clotted streak."""
    area = _draw_area(rng, scale)
    # Blood runs downwards: elongated, mostly vertical.
    angle = np.pi / 2 + rng.normal(0, 0.5)
    d, u, _ = _blob(rng, size, area, rng.uniform(1.5, 4.0), rng.uniform(0.08, 0.2), angle=angle)
    contrast = _draw_contrast(rng, 0.45, 0.95, scale)
    alpha = _alpha(d, size, 2.0, math.sqrt(area))
    clot = np.exp(0.2 * _fbm(rng, size, (8, 20)))  # uneven thickness: darker clots
    # Thicker towards the lower end where it pools.
    thick = alpha * contrast * (1.0 + 0.3 * np.clip(u, -1, 1)) * clot
    # Blood absorbs green and blue strongly: the mucosa under it turns deep red, and
    # thick clots turn almost black while keeping the texture underneath.
    absorb = np.array([0.55, 2.6, 2.6], np.float32)
    out = img * np.exp(-thick[..., None] * absorb)
    # Glossy: a few small highlights on the wet clot.
    gloss = np.maximum(_noise(rng, size, 18) - 2.0, 0.0) * alpha * contrast
    return out + 0.5 * gloss[..., None], alpha


def _instrument(rng: np.random.Generator, img: FloatArray, size: int, scale: float) -> _Layer:
    """Metallic instrument shaft entering from the FOV border, sometimes a snare."""
    x, y = _grid(size)
    entry = rng.uniform(0, 2 * np.pi)
    ex, ey = 1.08 * math.cos(entry), 1.08 * math.sin(entry)
    direction = entry + np.pi + rng.normal(0, 0.4)
    area = _draw_area(rng, scale)
    length = rng.uniform(0.55, 0.95) * min(1.0, scale) ** 0.5
    width = np.clip(area * np.pi / length, 0.05, 0.45)  # area ~ length * width / pi
    u, v = _rotate(x, y, ex, ey, direction)
    t = np.clip(u, 0.0, length)
    dist = np.sqrt((u - t) ** 2 + v * v)  # capsule: round tip
    half = width / 2
    alpha = np.clip((half - dist) / _px(size) + 0.5, 0.0, 1.0)
    s = np.clip(v / half, -1.0, 1.0)
    contrast = _draw_contrast(rng, 0.6, 1.0, scale)
    # Cylinder: bright along the axis, a sharp specular stripe, darker further in.
    cyl = np.sqrt(1.0 - s * s)
    stripe = np.exp(-(((s - rng.uniform(-0.4, 0.4)) / 0.15) ** 2))
    depth = 1.0 - 0.45 * t / length
    metal = np.array([0.62, 0.64, 0.68], np.float32) * rng.uniform(0.8, 1.1)
    base = _local_mean(img, alpha)
    colour = base * (1 - contrast) + metal * contrast
    shaft = colour * (0.35 + 0.6 * cyl)[..., None] + (0.6 * contrast * stripe)[..., None]
    shaft = shaft * depth[..., None]
    if rng.uniform() < 0.4:
        # Snare: a thin wire loop beyond the tip.
        lr = rng.uniform(0.12, 0.22)
        lu, lv = u - length - lr * 0.9, v
        ring = np.abs(np.sqrt(lu * lu + (lv * 1.3) ** 2) - lr)
        wire = np.clip((1.2 * _px(size) - ring) / _px(size) + 0.5, 0.0, 1.0)
        shaft = shaft * (1 - wire[..., None]) + (0.75 * depth * wire)[..., None] * metal
        alpha = np.maximum(alpha, wire)
    return img * (1 - alpha[..., None]) + shaft * alpha[..., None], alpha


def _heavy_content(rng: np.random.Generator, img: FloatArray, size: int, scale: float) -> _Layer:
    """Impacted stool: bowel content over much of the wall, far beyond any normal frame's.

    An in-distribution look (normal frames carry a little content) pushed past its training
    range, the kind of OOD that defeats detectors keyed on "unlike every class".
    """
    lo, hi = HEAVY_CONTENT_AREA
    content, alpha = _bowel_content(rng, size, (lo * min(scale, 1.0), hi))
    # Lit like the wall under it, so it sits in the scene rather than on top of it.
    lum = img.mean(axis=2, keepdims=True)
    shade = np.clip(lum / max(float(lum[fov_mask(size)].mean()), 1e-3), 0.2, 1.6)
    return img * (1 - alpha[..., None]) + content * shade * alpha[..., None], alpha


def _draw_area(rng: np.random.Generator, scale: float) -> float:
    lo, hi = np.log(_AREA_RANGE[0]), np.log(_AREA_RANGE[1])
    return float(np.exp(rng.uniform(lo, hi)) * scale * scale)


def _draw_contrast(rng: np.random.Generator, lo: float, hi: float, scale: float) -> float:
    return float(min(1.0, rng.uniform(lo, hi) * scale))


_ARTEFACTS: dict[str, Callable[[np.random.Generator, FloatArray, int, float], _Layer]] = {
    "polyp": _polyp,
    "blue-dye": _blue_dye,
    "bleeding": _bleeding,
    "instrument": _instrument,
    "bowel-content": _heavy_content,
}


def insert_artefact(
    img: np.ndarray, kind: str, rng: np.random.Generator, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Insert a near-OOD artefact into an endoscopy frame.

    Returns the new HxWx3 uint8 image and a boolean mask of the inserted region, clipped
    to the field of view and never empty.
    """
    if kind not in _ARTEFACTS:
        raise ValueError(f"unknown near-OOD kind {kind!r}; expected one of {NEAR_OOD_KINDS}")
    size = img.shape[0]
    if img.shape != (size, size, 3):
        raise ValueError(f"expected a square HxWx3 image, got {img.shape}")
    fov = fov_mask(size)
    base = img.astype(np.float32) / 255.0
    for _ in range(20):
        out, alpha = _ARTEFACTS[kind](rng, base, size, scale)
        mask = (alpha >= 0.5) & fov
        if mask.sum() >= 4:  # redraw the rare artefact that ends up outside the FOV
            break
    else:
        raise RuntimeError(f"could not place a {kind!r} artefact inside the field of view")
    # The background already went through the lens blur; give the inserted content the
    # same softness so sharp edges do not betray it.
    sigma = rng.uniform(0.4, 0.8) * size / 128.0
    diff = ndimage.gaussian_filter(out - base, sigma=(sigma, sigma, 0), truncate=3.0)
    # Keep the black border black: nothing is painted outside the FOV.
    out = base + diff * _fov_soft(size)[..., None]
    return _to_uint8(out), mask


def add_overlays(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Burnt-in text in the black border and a position-marker thumbnail, as on real frames.

    Returns the image and a boolean mask of the pixels the overlays changed.
    """
    size = img.shape[0]
    canvas = Image.fromarray(img)
    draw = ImageDraw.Draw(canvas)
    if rng.uniform() < TEXT_P:
        d, m, y = (int(v) for v in rng.integers((1, 1, 12), (29, 13, 24)))
        day = f"{d:02d}/{m:02d}/20{y}"
        clock = f"{int(rng.integers(7, 19)):02d}:{int(rng.integers(0, 60)):02d}"
        lines = [day, clock, f"Enh A{int(rng.integers(1, 9))}"][: int(rng.integers(1, 4))]
        grey = int(rng.integers(170, 256))
        top = 1 + int(rng.integers(0, 3))
        for i, line in enumerate(lines):
            draw.text((1, top + i * max(8, size // 14)), line, fill=(grey, grey, grey))
    if rng.uniform() < MARKER_P:
        w, h = int(size * rng.uniform(0.14, 0.2)), int(size * rng.uniform(0.11, 0.15))
        x0, y1 = 1, size - 2
        draw.rectangle([x0, y1 - h, x0 + w, y1], fill=(12, 24, 14), outline=MARKER_GREEN)
        t = np.linspace(0, 1, 12)
        curve = np.stack(
            [x0 + 2 + (w - 4) * t, y1 - 2 - (h - 4) * (t + 0.3 * np.sin(6 * t)) / 1.3], 1
        )
        draw.line([tuple(p) for p in curve.tolist()], fill=MARKER_GREEN, width=1)
    out = np.asarray(canvas)
    return out, (out != img).any(axis=2)


# --------------------------------------------------------------------------------------
# Far-OOD
# --------------------------------------------------------------------------------------


def _non_endoscopy(rng: np.random.Generator, size: int) -> np.ndarray:
    """Natural-scene-like frame (sky, ground, objects) or a grey-green texture, no FOV."""
    x, y = _grid(size)
    if rng.uniform() < 0.65:
        horizon = rng.uniform(-0.3, 0.5) + rng.normal(0, 0.15) * x
        horizon = horizon + 0.05 * _noise(rng, size, 5)
        top = np.array([0.25, 0.45, 0.85], np.float32) + rng.normal(0, 0.06, 3).astype(np.float32)
        low = np.array([0.75, 0.85, 0.95], np.float32)
        t = np.clip((y + 1.1) / 2.2, 0, 1)[..., None]
        sky = top * (1 - t) + low * t
        cloud = np.clip(_fbm(rng, size, (4, 8, 16)) - 0.4, 0, 1)[..., None] * 0.5
        sky = sky * (1 - cloud) + cloud
        ground_col = np.array(
            [rng.uniform(0.2, 0.5), rng.uniform(0.35, 0.6), rng.uniform(0.1, 0.3)], np.float32
        )
        ground = ground_col * (1 + 0.2 * _fbm(rng, size, (8, 24, 48)))[..., None]
        g = _smoothstep(-0.01, 0.01, y - horizon)[..., None]
        img = sky * (1 - g) + ground * g
        canvas = Image.fromarray(_to_uint8(img))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(1, 5))):
            col = tuple(int(c) for c in rng.integers(20, 236, size=3))
            cx, cy = rng.uniform(0, size, size=2)
            s = rng.uniform(0.08, 0.3) * size
            shape = rng.integers(0, 3)
            if shape == 0:
                draw.ellipse([cx - s, cy - s, cx + s, cy + s], fill=col)
            elif shape == 1:
                draw.rectangle([cx - s, cy - s * 0.6, cx + s, cy + s * 0.6], fill=col)
            else:
                draw.polygon([(cx, cy - s), (cx - s, cy + s), (cx + s, cy + s)], fill=col)
        img = np.asarray(canvas, dtype=np.float32) / 255.0
    else:
        a = _fbm(rng, size, (6, 12, 24, 48))
        b = _fbm(rng, size, (3, 6))
        c1 = np.array([0.35, 0.4, 0.33], np.float32) + rng.normal(0, 0.05, 3).astype(np.float32)
        c2 = np.array([0.55, 0.6, 0.5], np.float32) + rng.normal(0, 0.05, 3).astype(np.float32)
        t = np.clip(0.5 + 0.25 * a + 0.15 * b, 0, 1)[..., None]
        img = c1 * (1 - t) + c2 * t
    return _camera(rng, img.astype(np.float32), size, fov=False)


# --------------------------------------------------------------------------------------
# Dataset generation
# --------------------------------------------------------------------------------------


def _stable_id(text: str) -> int:
    # crc32 rather than hash(): Python's str hash is salted per process.
    return zlib.crc32(text.encode("utf-8"))


def _image_rng(seed: int, split: str, name: str, index: int) -> np.random.Generator:
    ss = np.random.SeedSequence(seed, spawn_key=(_stable_id(split), _stable_id(name), index))
    return np.random.default_rng(ss)


def _counts(config: DemoConfig) -> dict[str, dict[str, int]]:
    return {
        "id_train": {c: config.n_train_per_class for c in ID_CLASSES},
        "id_test": {c: config.n_test_per_class for c in ID_CLASSES},
        "ood": {k: config.n_ood_per_kind for k in NEAR_OOD_KINDS + FAR_OOD_KINDS},
    }


def _manifest_header(config: DemoConfig) -> dict:
    return {
        "source": SOURCE,
        "version": VERSION,
        "seed": config.seed,
        "size": config.size,
        "classes": sorted(ID_CLASSES),
        "ood_kinds": {"near": list(NEAR_OOD_KINDS), "far": list(FAR_OOD_KINDS)},
        "counts": _counts(config),
        "artefact_scale": config.artefact_scale,
    }


def make_sample(
    split: str, name: str, index: int, config: DemoConfig
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Render one sample of the benchmark in memory.

    Returns (image, mask or None, background class for near-OOD or None). ``split`` is
    ``id_train``, ``id_test`` or ``ood``.
    """
    rng = _image_rng(config.seed, split, name, index)
    size = config.size
    if split in ("id_train", "id_test"):
        return add_overlays(render_scene(name, rng, size), rng)[0], None, None
    if name in NEAR_OOD_KINDS:
        background = ID_CLASSES[int(rng.integers(len(ID_CLASSES)))]
        img = render_scene(background, rng, size)
        img, mask = insert_artefact(img, name, rng, config.artefact_scale)
        img, overlaid = add_overlays(img, rng)
        return img, mask & ~overlaid, background
    if name in FAR_OOD_KINDS:
        return _non_endoscopy(rng, size), None, None
    raise ValueError(f"unknown sample {split}/{name}")


def _jobs(config: DemoConfig) -> Iterator[tuple[str, str, int]]:
    for split, per_name in _counts(config).items():
        for name, n in per_name.items():
            for i in range(n):
                yield split, name, i


def _is_ours(out: Path) -> bool:
    try:
        return json.loads((out / "manifest.json").read_text()).get("source") == SOURCE
    except (OSError, ValueError, AttributeError):
        return False


def _remove_stale_tmp(out: Path) -> None:
    """Delete tmp folders left by generator processes that no longer run."""
    for path in out.parent.glob(f"{out.name}.tmp-*"):
        try:
            pid = int(path.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # process exists under another user: leave it alone


def demo_data_is_complete(out: Path, config: DemoConfig = DemoConfig()) -> bool:
    """True when ``out`` holds a finished benchmark generated with ``config``."""
    out = Path(out)
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict):
        return False
    header = _manifest_header(config)
    if any(manifest.get(key) != value for key, value in header.items()):
        return False
    # Cheap file-count check guards against folders edited or emptied afterwards.
    for split, per_name in header["counts"].items():
        for name, n in per_name.items():
            if len(list((out / split / name).glob("*.jpg"))) != n:
                return False
            masks = out / "masks" / split / name
            if name in NEAR_OOD_KINDS and len(list(masks.glob("*.png"))) != n:
                return False
    return True


def generate_demo_data(
    out: Path, config: DemoConfig = DemoConfig(), progress: Progress | None = None
) -> Path:
    """Write the benchmark to ``out`` and return it; reuses ``out`` if already complete.

    Generation happens in a sibling tmp folder that is renamed into place at the end, so an
    interrupted run never leaves something that looks complete. An existing ``out`` is
    only replaced when it is empty or was written by this generator.
    """
    out = Path(out)
    if demo_data_is_complete(out, config):
        return out
    if out.exists() and not (out.is_dir() and (_is_ours(out) or not any(out.iterdir()))):
        raise FileExistsError(f"{out} exists and is not a NERO synthetic dataset")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(out)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    jobs = list(_jobs(config))
    backgrounds: dict[str, str] = {}
    try:
        for done, (split, name, i) in enumerate(jobs, start=1):
            img, mask, background = make_sample(split, name, i, config)
            rel = Path(split) / name / f"{name}_{i:05d}.jpg"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(tmp / rel, quality=JPEG_QUALITY, subsampling=0)
            if mask is not None:
                mask_path = tmp / "masks" / rel.with_suffix(".png")
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
            if background is not None:
                backgrounds[rel.as_posix()] = background
            if progress is not None:
                progress(done, len(jobs))
        manifest = _manifest_header(config)
        manifest["fov"] = {
            "center": [(config.size - 1) / 2.0] * 2,
            "radius": FOV_RADIUS_FRAC * config.size,
        }
        manifest["near_ood_background"] = backgrounds
        # The manifest is written last: its presence marks a finished folder.
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        old = out.parent / f"{out.name}.old-{os.getpid()}"
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
