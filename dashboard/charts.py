"""Plotly figures of the dashboard (the map, the video timeline) and the histogram's
steps the overview draws: pure functions of arrays, no Streamlit, easy to test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

ID_TEST_COLOUR = "#2E6FBA"
ID_TRAIN_COLOUR = "#B4BEC8"
OOD_COLOURS = ("#D1495B", "#EDAE49", "#8E5EA2", "#00798C", "#E07A5F", "#6A994E", "#3D405B")
CLASS_COLOURS = ("#4C78A8", "#F58518", "#54A24B", "#B279A2", "#72B7B2", "#FF9DA6", "#9D755D")
POSITIVE = "#C0392B"  # relevance for the prediction / deviation above the centroid
NEGATIVE = "#2E6FBA"
FONT = dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif", size=13)
# Samples outside a map selection stay visible (plotly's default fades them to 0.2).
UNSELECTED_OPACITY = 0.45
# Histograms and the threshold slider span scores up to this percentile.
CLIP_PERCENTILE = 99.5
# Histogram bins: enough to show shape for a few hundred samples per split.
HIST_BINS = 40


def _layout(fig: go.Figure, height: int, **kwargs) -> go.Figure:
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=40, b=10),
        font=FONT,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
        **kwargs,
    )
    return fig


def split_colours(ood_sets: Sequence[str]) -> dict[str, str]:
    colours = {"id_train": ID_TRAIN_COLOUR, "id_test": ID_TEST_COLOUR}
    for i, name in enumerate(ood_sets):
        colours[f"ood:{name}"] = OOD_COLOURS[i % len(OOD_COLOURS)]
    return colours


def split_label(split: str) -> str:
    if split == "id_train":
        return "ID train"
    if split == "id_test":
        return "ID test"
    return f"OOD: {split.split(':', 1)[1]}" if split.startswith("ood:") else split


def robust_range(scores: np.ndarray) -> tuple[float, float]:
    """Lowest score to the 99.5th percentile: a few extreme OOD scores must not squash the
    axis (NERO scores of far-OOD images can be 1000× those of ID images)."""
    scores = np.asarray(scores, np.float64)
    lo = float(np.min(scores))
    hi = float(np.percentile(scores, CLIP_PERCENTILE))
    if hi <= lo:
        hi = float(np.max(scores))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


AXES = ("score", "log", "percentile")
# A histogram whose range spans more than this many ID test IQRs piles the normal images
# into one bar: such a score is shown on a log or percentile axis by default.
HEAVY_TAIL_IQRS = 30.0


def default_axis(id_test: np.ndarray, others: np.ndarray) -> str:
    """``score`` unless the scores are heavy-tailed; then ``log`` (all positive) or
    ``percentile`` (among normal test images)."""
    id_test = np.asarray(id_test, np.float64)
    every = np.concatenate([id_test, np.asarray(others, np.float64)])
    lo, hi = robust_range(every)
    q1, q3 = np.percentile(id_test, [25, 75])
    if q3 - q1 > 0 and (hi - lo) / (q3 - q1) <= HEAVY_TAIL_IQRS:
        return "score"
    return "log" if every.min() > 0 else "percentile"


@dataclass(frozen=True)
class HistogramSteps:
    """What a score histogram draws: one step line per split (bin edges, % of the split per
    bin, the last value repeated to close the step), the axis and where the threshold sits."""

    traces: list[tuple[str, np.ndarray, np.ndarray, str]]  # name, x (edges), y (%), colour
    lo: float
    hi: float
    x_title: str
    threshold_x: float
    clipped: int  # scores beyond the robust range, counted in the last bin
    edge: float  # where that bin starts, in score units


def histogram_steps(
    id_test: np.ndarray,
    ood: Mapping[str, np.ndarray],
    threshold: float,
    method_label: str,
    axis: str = "score",
    colours: Mapping[str, str] | None = None,
) -> HistogramSteps:
    """Score histograms (share of each split per bin) and the threshold, ready to draw.

    ``axis``: the score, its log10 (all scores > 0), or its percentile among the ID test
    scores (heavy tails and scores piled near zero spread out evenly). ``colours``: the
    run's fixed colour of each OOD set, so a set keeps its colour when others are filtered
    out. Scores beyond the robust range are counted in the last bin.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    reference = np.sort(np.asarray(id_test, np.float64))

    def transform(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if axis == "log":
            return np.log10(x)
        if axis == "percentile":
            return 100.0 * np.searchsorted(reference, x, side="right") / reference.size
        return x

    id_t = transform(id_test)
    ood_t = {k: transform(v) for k, v in ood.items()}
    everything = np.concatenate([id_t, *ood_t.values()]) if ood_t else id_t
    lo, hi = (0.0, 100.0) if axis == "percentile" else robust_range(everything)
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    colours = colours or {}
    named = [("ID test", id_t, ID_TEST_COLOUR)] + [
        (f"OOD: {name}", scores, colours.get(name, OOD_COLOURS[i % len(OOD_COLOURS)]))
        for i, (name, scores) in enumerate(ood_t.items())
    ]
    traces = []
    for name, scores, colour in named:
        counts, _ = np.histogram(np.clip(scores, lo, hi), bins=edges)
        share = 100.0 * counts / max(scores.size, 1)
        traces.append((name, edges, np.r_[share, share[-1]], colour))
    what = {
        "score": f"{method_label} score",
        "log": f"log₁₀ {method_label} score",
        "percentile": f"{method_label} score as % of ID test images scoring lower",
    }[axis]
    return HistogramSteps(
        traces,
        float(lo),
        float(hi),
        f"{what} (higher = more out-of-distribution)",
        float(np.clip(transform(np.array([threshold]))[0], lo, hi)),
        int((everything > hi).sum()),
        float(10**hi if axis == "log" else hi),
    )


def embedding_figure(
    points: np.ndarray,
    indices: np.ndarray,
    groups: Sequence[str],
    group_colours: Mapping[str, str],
    hover: Sequence[str] | None,
    centroids: np.ndarray,
    centroid_labels: Sequence[str],
    centroid_colours: Sequence[str],
    picked: int | None = None,
    values: np.ndarray | None = None,
    value_label: str = "",
    webgl: bool = False,
) -> go.Figure:
    """Samples (one trace per group, ``customdata`` = sample index) and big centroid stars.

    ``points`` holds every sample of the run; ``indices`` the rows shown (``groups``,
    ``hover`` and ``values`` follow ``indices``). With ``values`` the samples are one trace
    coloured on a continuous scale instead of one trace per group.
    """
    fig = go.Figure()
    scatter = go.Scattergl if webgl else go.Scatter
    index = np.asarray(indices, np.int64)
    shown = points[index]
    # A large map sends numbers only (plotly packs them as binary): per-point strings for
    # 100k samples are megabytes of JSON. Its hover names the sample, its group or score.
    hover = None if hover is None else np.asarray(hover, object)
    if values is not None:
        fig.add_trace(_value_trace(scatter, shown, index, hover, values, value_label))
    else:
        for trace in _group_traces(scatter, shown, index, groups, group_colours, hover):
            fig.add_trace(trace)
    fig.add_trace(_centroid_trace(centroids, centroid_labels, centroid_colours))
    if picked is not None and 0 <= picked < points.shape[0]:
        fig.add_trace(_picked_trace(points, picked))
    return _map_layout(fig, shown, centroids)


def value_range(values: np.ndarray) -> tuple[float, float]:
    """The scores a map coloured by score spans: 1st to 99th percentile (outliers clamp)."""
    if not len(values):
        return 0.0, 1.0
    lo, hi = np.nanpercentile(values, [1, 99])
    return float(lo), float(hi)


def _value_trace(
    scatter: type,
    shown: np.ndarray,
    index: np.ndarray,
    hover: np.ndarray | None,
    values: np.ndarray,
    value_label: str,
) -> go.Scatter:
    """All shown samples as one trace coloured by ``values`` (1st to 99th percentile)."""
    lo, hi = value_range(values)
    return scatter(
        x=shown[:, 0],
        y=shown[:, 1],
        mode="markers",
        name="samples",
        customdata=index,
        text=hover,
        hovertemplate=(
            "#%{customdata} · " + value_label + " %{marker.color:.4g}<extra></extra>"
            if hover is None
            else "%{text}<extra></extra>"
        ),
        marker=dict(
            size=7,
            color=values,
            colorscale="Viridis",
            cmin=lo,
            cmax=hi,
            colorbar=dict(title=value_label, thickness=12),
            line=dict(width=0),
        ),
        unselected=dict(marker=dict(opacity=UNSELECTED_OPACITY)),
        showlegend=False,
    )


def _group_traces(
    scatter: type,
    shown: np.ndarray,
    index: np.ndarray,
    groups: Sequence[str],
    group_colours: Mapping[str, str],
    hover: np.ndarray | None,
) -> list[go.Scatter]:
    """One trace per group, in order of first appearance, in the group's colour."""
    groups = np.asarray(groups, object)
    traces = []
    for name in dict.fromkeys(groups):
        rows = np.flatnonzero(groups == name)
        traces.append(
            scatter(
                x=shown[rows, 0],
                y=shown[rows, 1],
                mode="markers",
                name=str(name),
                customdata=index[rows],
                text=None if hover is None else hover[rows],
                hovertemplate=(
                    "#%{customdata} · %{fullData.name}<extra></extra>"
                    if hover is None
                    else "%{text}<extra></extra>"
                ),
                marker=dict(
                    size=6 if name == "ID train" else 8,
                    color=group_colours.get(name, "#888"),
                    opacity=0.55 if name == "ID train" else 0.9,
                    line=dict(width=0.5, color="white"),
                ),
                unselected=dict(marker=dict(opacity=UNSELECTED_OPACITY)),
            )
        )
    return traces


def _centroid_trace(
    centroids: np.ndarray, labels: Sequence[str], colours: Sequence[str]
) -> go.Scatter:
    """The class centroids as big labelled stars (labels placed clear of each other)."""
    return go.Scatter(
        x=centroids[:, 0],
        y=centroids[:, 1],
        mode="markers+text",
        name="class centroids",
        text=list(labels),
        textposition=label_positions(centroids),
        textfont=dict(size=14, color="#111"),
        hovertemplate="centroid of %{text}<extra></extra>",
        marker=dict(
            symbol="star",
            size=26,
            color=list(colours),
            line=dict(width=2, color="#111"),
        ),
        unselected=dict(marker=dict(opacity=1.0), textfont=dict(color="#111")),
    )


def _picked_trace(points: np.ndarray, picked: int) -> go.Scatter:
    """A ring around the picked sample."""
    return go.Scatter(
        x=[points[picked, 0]],
        y=[points[picked, 1]],
        mode="markers",
        name=f"picked sample #{picked}",
        hoverinfo="skip",
        marker=dict(symbol="circle-open", size=22, color="#111", line=dict(width=3)),
    )


def map_view(shown: np.ndarray, centroids: np.ndarray) -> tuple[tuple[float, float], ...]:
    """The map's initial ((x0, x1), (y0, y1)): the bulk of ``shown`` and every centroid, with a
    margin. Far-out strands stay reachable (zoom out) instead of squashing the rest."""
    view = np.vstack([robust_box(shown), centroids]) if len(shown) else centroids
    (x0, y0), (x1, y1) = view.min(axis=0), view.max(axis=0)
    pad_x, pad_y = 0.08 * (x1 - x0 or 1.0), 0.08 * (y1 - y0 or 1.0)
    return (float(x0 - pad_x), float(x1 + pad_x)), (float(y0 - pad_y), float(y1 + pad_y))


def _map_layout(fig: go.Figure, shown: np.ndarray, centroids: np.ndarray) -> go.Figure:
    """Bare axes whose initial view is :func:`map_view`."""
    x_range, y_range = map_view(shown, centroids)
    fig.update_xaxes(showticklabels=False, title_text="", zeroline=False, range=list(x_range))
    fig.update_yaxes(showticklabels=False, title_text="", zeroline=False, range=list(y_range))
    # No dragmode: Streamlit then pans on drag and selects on click; the toolbar's box and
    # lasso tools switch to area selection. The legend below the map: above it, the toolbar
    # (top right) covered its last entries.
    fig = _layout(fig, 640)
    fig.update_layout(
        legend=dict(orientation="h", yanchor="top", y=-0.02, xanchor="left", x=0),
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return fig


# The map's initial view spans these percentiles of the points (outliers are zoomed out to).
VIEW_PERCENTILES = (1.0, 99.0)


def robust_box(points: np.ndarray) -> np.ndarray:
    """Two corners (2×2) of the box holding the bulk of ``points``."""
    lo, hi = np.percentile(points, VIEW_PERCENTILES, axis=0)
    return np.vstack([lo, hi])


def label_positions(points: np.ndarray) -> list[str]:
    """Text positions for point labels so that labels of nearby points do not overlap:
    each label goes on the side facing away from its nearest neighbour."""
    points = np.asarray(points, np.float64)
    if len(points) < 2:
        return ["top center"] * len(points)
    span = np.ptp(points, axis=0)
    span[span == 0] = 1.0
    scaled = points / span
    gaps = scaled[:, None, :] - scaled[None]
    dist = np.sqrt((gaps**2).sum(-1)) + np.eye(len(points)) * 1e9
    nearest = dist.argmin(axis=1)
    away = scaled - scaled[nearest]
    positions = []
    for dx, dy in away:
        if abs(dy) >= abs(dx):
            positions.append("top center" if dy > 0 else "bottom center")
        else:
            positions.append("middle right" if dx > 0 else "middle left")
    return positions


def score_timeline(
    times: np.ndarray,
    scores: np.ndarray,
    verdicts: Sequence[str],
    colours: Mapping[str, str],
    borderline: float,
    ood: float,
    label: str,
) -> go.Figure:
    """A video's score over time: a dot per sampled frame in its verdict's colour, the two
    thresholds as lines, and the flagged stretches shaded."""
    fig = go.Figure()
    fig.add_scatter(
        x=times,
        y=scores,
        mode="lines",
        line=dict(color="#BBB", width=1),
        hoverinfo="skip",
        showlegend=False,
    )
    for verdict in dict.fromkeys(verdicts):
        pick = np.asarray(verdicts) == verdict
        fig.add_scatter(
            x=np.asarray(times)[pick],
            y=np.asarray(scores)[pick],
            mode="markers",
            marker=dict(color=colours[verdict], size=8),
            name=verdict,
            customdata=np.flatnonzero(pick),
            hovertemplate="%{x:.1f} s · score %{y:.4g}<extra>%{fullData.name}</extra>",
        )
    for value, name in ((borderline, "borderline"), (ood, "out-of-distribution")):
        fig.add_hline(y=value, line=dict(dash="dot", width=1), annotation_text=name)
    flagged = np.asarray(scores) > ood
    starts = np.flatnonzero(flagged & ~np.r_[False, flagged[:-1]])
    ends = np.flatnonzero(flagged & ~np.r_[flagged[1:], False])
    for a, b in zip(starts, ends, strict=True):
        fig.add_vrect(
            x0=times[a],
            x1=times[b],
            fillcolor=colours.get("OOD", POSITIVE),
            opacity=0.12,
            line_width=0,
        )
    fig.update_xaxes(title="time in the video (s)")
    fig.update_yaxes(title=f"{label} score")
    return _layout(fig, 320)
