"""Heatmaps drawn as PNG: the image beside its relevance, with a colour bar and caption."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from nero.explain.attribution import Heatmap
from nero.explain.kinds import HEATMAP_KINDS

# Overlay colour scale: ± this percentile of |relevance|, so one extreme pixel does not
# wash out the rest of the map (values beyond it are drawn at full colour).
OVERLAY_PERCENTILE = 99.5
NO_EVIDENCE = "No unusual evidence:\nno more than normal test images show"


def _title(heat: Heatmap, class_names: Sequence[str] | None) -> str:
    def name(c: int | None) -> str:
        if c is None:
            return "?"
        return class_names[c] if class_names is not None and c < len(class_names) else str(c)

    kind = HEATMAP_KINDS[heat.kind]
    target = heat.target if heat.kind == "neuron" else name(heat.target)
    what = kind.title.format(target=target)
    return f"{what} (predicted {name(heat.predicted)})\n{heat.method}: {heat.rule_set}"


def overlay_png(
    image: Image.Image,
    heat: Heatmap,
    alpha: float = 0.5,
    out: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    scale: float | None = None,
    unusual: bool | None = None,
) -> bytes:
    """The image with the signed relevance on top (red > 0 > blue, centred on zero).

    The heatmap is on the original image's grid (:meth:`Heatmap.original`); the part the
    model never saw (a frame it was given without) is hatched. Opacity grows with |R| up
    to ``alpha``, so areas without relevance show the image itself. ``scale``: the run's
    shared colour scale (|R| drawn at full colour), so maps of different images compare;
    without it, this map's own percentile. ``unusual=False``: an OOD heatmap with no more
    evidence than normal images show, drawn as the grey image with that message.
    """
    from matplotlib import cm, colormaps, colors
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rel = np.asarray(heat.original(), np.float64)
    if scale is None:
        lim = float(np.percentile(np.abs(rel), OVERLAY_PERCENTILE)) or float(np.abs(rel).max())
        scale_label = f"relevance (colour clipped at {OVERLAY_PERCENTILE}th pct of this map)"
    else:
        lim = scale
        scale_label = "relevance (full colour: the run's scale, or this map's own if stronger)"
    lim = lim or 1.0
    norm = colors.Normalize(vmin=-lim, vmax=lim)
    cmap = colormaps["bwr"]
    rgba = cmap(norm(rel))
    rgba[..., 3] = alpha * np.clip(np.abs(rel) / lim, 0, 1) ** 0.5

    fig = Figure(figsize=(8.4, 3.9), dpi=110)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    width, height = image.size
    extent = (0, width, height, 0)
    left.imshow(np.asarray(image.convert("RGB")), extent=extent)
    left.set_title("image", fontsize=8)
    # Grey underneath, so the red/blue of the relevance cannot be confused with the image.
    right.imshow(np.asarray(image.convert("L")), cmap="gray", vmin=0, vmax=255, extent=extent)
    if unusual is False:
        right.text(
            width / 2,
            height / 2,
            NO_EVIDENCE,
            ha="center",
            va="center",
            fontsize=9,
            wrap=True,
            bbox=dict(facecolor="white", alpha=0.85, edgecolor="none"),
        )
    else:
        right.imshow(rgba, extent=extent, interpolation="bilinear")
    _hatch_unseen(right, heat, width, height)
    right.set_title(_title(heat, class_names), fontsize=8, pad=16)
    for ax in (left, right):
        ax.set_axis_off()
    _colour_bar(fig, right, cm.ScalarMappable(norm=norm, cmap=cmap), scale_label)
    caption = f"conservation {heat.conservation:.3g}"
    if heat.note:
        caption += " · " + heat.note
    fig.text(0.02, 0.0, textwrap.fill(caption, 130), fontsize=7, va="top")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    data = buffer.getvalue()
    if out is not None:
        Path(out).write_bytes(data)
    return data


def _hatch_unseen(ax, heat: Heatmap, width: int, height: int) -> None:
    """Hatch the part of the image the model never saw."""
    unseen = ~heat.seen()
    if unseen.any():
        ax.contourf(
            np.linspace(0, width, unseen.shape[1]),
            np.linspace(0, height, unseen.shape[0]),
            unseen.astype(float),
            levels=[0.5, 1.5],
            colors="none",
            hatches=["///"],
        )


def _colour_bar(fig, ax, mappable, label: str) -> None:
    bar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=7)
    bar.ax.yaxis.get_offset_text().set_fontsize(7)  # the ×10ⁿ of tiny relevances
