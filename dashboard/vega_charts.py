"""The overview's and the inspector's charts in Vega-Lite (Altair): pure functions of arrays,
no Streamlit.

Why not Plotly here: the overview and the inspector are the pages a reviewer opens first, and
the inspector redraws on every sample switch; their charts are simple (steps, lines, bars).
Streamlit's front end loads Vega in about a sixth of the bytes of Plotly (0.8 MB against
4.6 MB), so the first chart appears seconds earlier on a cold browser
(``bench/dashboard.py --browser``). Plotly stays where its features are needed: the relevance
map's lasso and WebGL, the video timeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from dashboard.charts import CLASS_COLOURS, NEGATIVE, POSITIVE, HistogramSteps
from nero.detect.metrics import roc

# A ROC curve of a large run has a point per distinct score: this many are enough to draw it.
ROC_POINTS = 400


def _legend_on_top(chart: alt.TopLevelMixin, height: int) -> alt.TopLevelMixin:
    return chart.properties(height=height).configure_legend(
        orient="top", title=None, labelLimit=320, symbolStrokeWidth=3, columns=3
    )


def score_histogram(steps: HistogramSteps) -> alt.LayerChart:
    """Score histograms (share of each split per bin) as filled steps, and the threshold as a
    dashed rule: the bins, clipping and axes :func:`dashboard.charts.histogram_steps` made."""
    frame = pd.concat(
        [pd.DataFrame({"split": name, "x": xs, "share": ys}) for name, xs, ys, _ in steps.traces],
        ignore_index=True,
    )
    names = [name for name, *_ in steps.traces]
    colour = alt.Color(
        "split:N",
        scale=alt.Scale(domain=names, range=[c for *_, c in steps.traces]),
        sort=names,
    )
    x = alt.X("x:Q", title=steps.x_title, scale=alt.Scale(domain=[steps.lo, steps.hi], nice=False))
    y = alt.Y("share:Q", title="% of the split", stack=None)
    base = alt.Chart(frame).encode(x=x, y=y, color=colour)
    tooltip = [alt.Tooltip("split:N"), alt.Tooltip("share:Q", format=".1f", title="% of split")]
    area = base.mark_area(interpolate="step-after", opacity=0.12)
    line = base.mark_line(interpolate="step-after", strokeWidth=2).encode(tooltip=tooltip)
    at = pd.DataFrame({"x": [steps.threshold_x], "label": ["threshold"]})
    rule = alt.Chart(at).mark_rule(color="#222", strokeDash=[6, 4], strokeWidth=2).encode(x="x:Q")
    text = (
        alt.Chart(at)
        .mark_text(align="left", dx=4, dy=-6, baseline="top", color="#222")
        .encode(x="x:Q", y=alt.value(0), text="label:N")
    )
    return _legend_on_top(alt.layer(area, line, rule, text), 380)


def roc_figure(
    id_scores: Mapping[str, np.ndarray],
    ood_scores: Mapping[str, np.ndarray],
    aurocs: Mapping[str, float],
    labels: Mapping[str, str],
    highlight: str,
    point: tuple[float, float] | None = None,
) -> alt.LayerChart:
    """ROC curves (OOD = positive) of several methods; the highlighted one drawn thick, and
    ``point`` (the current threshold) marked."""
    rows, names, colours = [], [], []
    for i, method in enumerate(id_scores):
        fpr, tpr = roc(id_scores[method], ood_scores[method])
        if fpr.size > ROC_POINTS:  # keep the curve's shape, drop points closer than a pixel
            keep = np.unique(np.linspace(0, fpr.size - 1, ROC_POINTS).astype(int))
            fpr, tpr = fpr[keep], tpr[keep]
        name = f"{labels[method]} (AUROC {aurocs[method]:.1f})"
        names.append(name)
        colours.append(POSITIVE if method == highlight else CLASS_COLOURS[i % len(CLASS_COLOURS)])
        width = 3.5 if method == highlight else 1.8
        rows.append(pd.DataFrame({"fpr": fpr, "tpr": tpr, "method": name, "width": width}))
    frame = pd.concat(rows, ignore_index=True)
    colour = alt.Color("method:N", scale=alt.Scale(domain=names, range=colours), sort=names)
    axes = dict(
        x=alt.X("fpr:Q", title="false positive rate (ID flagged)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("tpr:Q", title="true positive rate (OOD caught)", scale=alt.Scale(domain=[0, 1])),
    )
    chance = (
        alt.Chart(pd.DataFrame({"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}))
        .mark_line(color="#BBB", strokeDash=[2, 3])
        .encode(**axes)
    )
    curves = (
        alt.Chart(frame)
        .mark_line()
        .encode(**axes, color=colour, strokeWidth=alt.StrokeWidth("width:Q", legend=None),
                detail="method:N")
    )  # fmt: skip
    layers = [chance, curves]
    if point is not None:
        marker = pd.DataFrame({"fpr": [point[0]], "tpr": [point[1]], "what": ["current threshold"]})
        layers.append(
            alt.Chart(marker)
            .mark_point(shape="cross", size=160, filled=True, color="#222")
            .encode(**axes, tooltip=["what:N"])
        )
    return _legend_on_top(alt.layer(*layers), 380)


def neuron_bars(
    neurons: Sequence[int],
    sample: np.ndarray,
    centroid: np.ndarray,
    centroid_label: str,
) -> alt.LayerChart:
    """The sample's relevance of its most deviating neurons (bars, red = for the prediction,
    blue = against), with the centroid's value drawn as a black tick."""
    sample, centroid = np.asarray(sample, np.float64), np.asarray(centroid, np.float64)
    frame = pd.DataFrame(
        {
            "neuron": [f"n{j}" for j in neurons],
            "relevance": sample,
            "centroid": centroid,
            "deviation": sample - centroid,
            "sign": np.where(sample >= 0, "for", "against"),
        }
    )
    order = frame["neuron"].tolist()
    x = alt.X("neuron:N", sort=order, title="neuron (most deviating first)")
    tooltip = [
        alt.Tooltip("neuron:N"),
        alt.Tooltip("relevance:Q", format=".4g"),
        alt.Tooltip("centroid:Q", format=".4g", title=f"centroid of {centroid_label}"),
        alt.Tooltip("deviation:Q", format="+.4g"),
    ]
    bars = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=x,
            y=alt.Y("relevance:Q", title="relevance"),
            color=alt.Color(
                "sign:N", scale=alt.Scale(domain=["for", "against"], range=[POSITIVE, NEGATIVE]),
                legend=None,
            ),
            tooltip=tooltip,
        )
    )  # fmt: skip
    ticks = (
        alt.Chart(frame.assign(what=f"centroid of {centroid_label}"))
        .mark_tick(color="#111", thickness=3)
        .encode(x=x, y="centroid:Q", opacity=alt.Opacity("what:N", legend=alt.Legend(title=None)),
                tooltip=tooltip)
    )  # fmt: skip
    return _legend_on_top(alt.layer(bars, ticks), 320)


def probability_bars(class_names: Sequence[str], probabilities: np.ndarray) -> alt.Chart:
    """The model's probability of each class, as horizontal bars (in %)."""
    frame = pd.DataFrame(
        {"class": list(class_names), "probability": 100.0 * np.asarray(probabilities, np.float64)}
    )
    return (
        alt.Chart(frame)
        .mark_bar(color=CLASS_COLOURS[0])
        .encode(
            x=alt.X("probability:Q", title="probability (%)", scale=alt.Scale(domain=[0, 100])),
            y=alt.Y("class:N", sort=list(class_names), title=None),
            tooltip=[alt.Tooltip("class:N"), alt.Tooltip("probability:Q", format=".1f")],
        )
        .properties(height=max(90, 26 * len(class_names)))
    )
