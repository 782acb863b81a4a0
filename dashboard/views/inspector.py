"""Sample inspector: why did this image get its score?"""

from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard import (
    charts,
    components,
    explanation,
    heatmap_jobs,
    imaging,
    loaders,
    review,
    samples,
    state,
    verdicts,
)
from nero.detect.registry import method_label
from nero.detect.relevance import softmax
from nero.run.conformal import COMBINATION_NAMES, contributions, p_value_words
from nero.run.scoring import (
    fusion_combination,
    fusion_members,
    more_like_this,
    nearest_train,
    neuron_prototypes,
)
from nero.run.verdicts import telling_samples

NEIGHBOURS = 6
LIKE_THIS = 6
PROTOTYPES = 6

name, r = components.require_run()
components.header(
    "Sample inspector",
    "Why did this image get its score? The score's parts, the neurons that deviate from the "
    "nearest class centroid, where in the image the evidence lies, and the training images it "
    "resembles.",
)
table = loaders.table(r)
n = len(table)
method = state.active_method(name, r)  # the same detector as the worklist and overview
scores = table[method].to_numpy(np.float64)
quick = telling_samples(r, method)
if state.picked_sample(n) is None:  # a sensible first sample: the clearest OOD image
    state.pick_sample(quick.get("Most OOD-like image", 0))

# ---------------------------------------------------------------- choosing the sample
c0, cm, *button_cols = st.columns([2, 2, *([1] * max(len(quick), 1))], vertical_alignment="bottom")
method_widget, method_cb = state.persistent_widget(state.method_key(name), method)
cm.selectbox(
    "Detector",
    r.methods,
    format_func=method_label,
    key=method_widget,
    help="The detector whose verdict and score this page shows; the worklist, the overview "
    "and the map use the same one.",
    **method_cb,
)
sample_key, sample_cb = state.persistent_widget(state.SAMPLE, state.picked_sample(n))
index = int(
    c0.number_input(
        f"Sample (0 – {n - 1})",
        min_value=0,
        max_value=n - 1,
        step=1,
        key=sample_key,
        help="Row of the run's samples.csv. You can also click a dot on the relevance map.",
        **sample_cb,
    )
)
for col, (label, target) in zip(button_cols, quick.items(), strict=False):
    col.button(label, key=f"quick-{label}", on_click=state.pick_sample, args=(target,))
order = state.worklist_order(name, r, scores)
back, place, forward = st.columns([1, 3, 1], vertical_alignment="center")
back.button(
    "Previous", key="worklist-prev", icon=":material/arrow_back:", shortcut="J",
    on_click=state.step_sample, args=(order, index, -1), width="stretch",
)  # fmt: skip
forward.button(
    "Next", key="worklist-next", icon=":material/arrow_forward:", shortcut="K",
    on_click=state.step_sample, args=(order, index, 1), width="stretch",
)  # fmt: skip
place.caption(
    (f"Worklist: {order.index(index) + 1} of {len(order)}" if index in order
     else f"Not in the worklist's current filter ({len(order)} images)")
    + " · keys J / K: previous / next"
)  # fmt: skip

row = table.iloc[index]
i = index
features = np.asarray(r.features[i : i + 1], np.float64)
relevance = np.asarray(r.relevance[i : i + 1], np.float64)
expl = r.detector.explain(features, relevance)
d = features.shape[1]
probs = softmax(np.asarray(r.logits[i : i + 1], np.float64))[0]
pred = int(row["pred"])
thr = verdicts.thresholds(r, method)
score = float(scores[i])
nearest_class = r.class_names[int(expl.nearest_class[0])]
if heatmap_jobs.heatmaps_module() is not None and row["path"]:
    # Computed in the background while the page draws, the neuron shown first in the same
    # pass; collected at the end of the page.
    neuron_first = st.session_state.get(
        f"proto-neuron-{i}", int(imaging.most_deviating(expl.deviation[0])[0])
    )
    heatmap_jobs.start_heatmaps(
        r, i, int(st.session_state.get(f"hm-{i}-target", pred)), int(neuron_first)
    )

# ---------------------------------------------------------------- the image and its verdict
img = loaders.image(str(row["path"]))
mask_path = str(row["mask"]) if "mask" in table.columns and row["mask"] else ""
left, mid, right = st.columns([2, 2, 2], gap="large")
with left:
    if img is None:
        st.warning(f"The image file is not readable any more: `{row['path']}`")
    else:
        shown = imaging.upscale(img)
        border = loaders.mask_edge(mask_path, (shown.shape[1], shown.shape[0]))
        if border is not None and st.toggle("Outline the inserted artefact", True, key="mask-img"):
            shown = imaging.paint(shown, border)
        st.image(shown, width="stretch")
with mid:
    st.markdown(f"### #{i} · {charts.split_label(row['split'])}")
    st.markdown(
        f"True class: **{row['true class'] if row['label'] >= 0 else 'none (OOD)'}**  \n"
        f"Predicted: **{row['predicted class']}** ({100 * probs[pred]:.1f} %)  \n"
        f"Nearest centroid: **{nearest_class}**"
    )
    verdicts.verdict_badge(score, thr, method_label(method))
    fused = r.p_value("fusion")
    if fused is not None and "fusion" in r.report:
        combination = fusion_combination(r)
        member_p = {m: float(r.p_value(m)[i]) for m in fusion_members(r)}
        share = contributions(member_p, combination)
        st.markdown(
            f"**Fusion** (calibrated on normal test frames): p = {fused[i]:.3g} — "
            f"{p_value_words(float(fused[i]))}."
        )
        st.caption(
            "Made of: "
            + "; ".join(
                f"{method_label(m)} p = {p:.3g} ({100 * share[m]:.0f} % of the fused evidence)"
                for m, p in member_p.items()
            )
            + f", combined by {COMBINATION_NAMES.get(combination, combination)}. Members and "
            "combination were chosen from normal images alone."
        )
    if loaders.not_endoscopy_like(r, i):
        st.warning(
            ":material/palette: **Not an endoscopy-like frame?** Its colours are farther from "
            "every training image's than 99 % of normal test images' are: a rendering, a "
            "screenshot or another kind of image — or a strong colour change such as dye or "
            "blood. A score means little for an image unlike anything the model has seen."
        )
    blanked = loaders.frame_only_scores(r)
    if blanked is not None and i in blanked.index and method in blanked.columns:
        only = float(blanked.at[i, method])
        st.caption(
            f":material/photo_camera: With the tissue blanked (the frame alone): score "
            f"{only:.4g} against {score:.4g} — {verdicts.phrase(only, thr).lower()} on its own."
        )
with right:
    explanation.class_probabilities(r.class_names, probs)

with st.container(border=True):
    st.markdown(":material/link: **Link to this view** (copy with the button at its right)")
    st.code(state.share_link(), language=None, wrap_lines=True)
    st.markdown(":material/rate_review: **Your review of this verdict**")
    review.review_form(r, i, method, score, verdicts.verdict_of(score, thr), thr)

top = explanation.why_this_score(
    r, expl, 0, relevance[0], d, verdicts.verdict_of(score, thr), key="insp"
)

# ---------------------------------------------------------------- heatmaps
st.subheader("Where in the image")
fill_heatmaps = None
module = heatmap_jobs.heatmaps_module()
if module is None:
    st.info(
        "Heatmaps are unavailable in this installation (the input-space LRP module could not "
        "be loaded). Everything else on this page still works."
    )
elif img is None:
    st.info("No heatmap without the image file.")
else:
    fill_heatmaps = explanation.heatmap_views(
        img,
        lambda target: heatmap_jobs.heatmaps(r, i, target),
        r.class_names,
        pred,
        key=f"hm-{i}",
        file_stem=f"{name}-sample{i}",
        mask_path=mask_path,
    )

# ---------------------------------------------------------------- neighbours and prototypes
st.subheader("Closest training images")
st.caption(
    "The ID training images whose neuron relevance is nearest to this one, in the space NERO "
    "measures distances in."
)
near, dist = nearest_train(
    r,
    relevance[0],
    k=NEIGHBOURS,
    exclude=i if row["split"] == "id_train" else None,
    space=loaders.train_space(r),
)
samples.nearest_images(table, near, dist, key="near", scale=loaders.neighbour_scale(r))

st.subheader("More like this")
if st.toggle(
    "Show the images of this run most like this one",
    key="more-like-this",
    help="Nearest images across the normal test and OOD sets in NERO's relevance space: "
    "similar failures often share a cause. Stays on for the next samples.",
):
    like, like_dist = more_like_this(r, i, k=LIKE_THIS, space=loaders.review_space(r))
    like_verdicts = thr.verdict(scores[like]) if like.size else np.array([], str)
    st.caption(
        f"The {like.size} images of this run (normal test and OOD sets, not training) whose neuron "
        f"relevance is nearest to this one's: {int((like_verdicts != 'in-distribution').sum())} of "
        f"them flagged by {method_label(method)}. Similar failures often share a cause."
    )
    samples.thumbnail_grid(
        table,
        like,
        key="like",
        captions=[
            f"#{j} · {charts.split_label(table['split'].iat[j])} · d={dd:.4g} · {words}"
            for j, dd, words in zip(
                like, like_dist, [verdicts.STYLE[v][2] for v in like_verdicts], strict=True
            )
        ],
    )

st.subheader("What drives a deviating neuron")
st.caption(
    "Pick one of the neurons above: where it fires in this image (its conditional heatmap), "
    f"and the {nearest_class} training images it matters most for: what normal images use "
    "the neuron for."
)
neuron = int(
    st.selectbox(
        "Neuron",
        top,
        format_func=lambda j: f"n{j} (deviation {expl.deviation[0][j]:+.3g})",
        key=f"proto-neuron-{i}",
    )
)
here, refs = st.columns([1, 3], gap="large")
neuron_slot = here.empty()  # filled last: the class and OOD maps come first


def fill_neuron_map() -> None:
    """Where the picked neuron fires in this image (its conditional heatmap)."""
    if img is None or heatmap_jobs.heatmaps_module() is None:
        return
    try:
        fired = heatmap_jobs.neuron_heatmap(r, i, neuron)
    except Exception as exc:  # any engine failure: say so, keep the page
        neuron_slot.warning(f"The neuron's heatmap could not be computed: {exc}")
        return
    neuron_slot.image(
        imaging.shade_unseen(
            imaging.upscale(imaging.overlay(img, fired["relevance"], 0.7)), fired["seen"]
        ),
        caption=f"where n{neuron} fires in #{i}",
        width="stretch",
    )


with refs:
    proto, values = neuron_prototypes(r, neuron, k=PROTOTYPES, label=int(expl.nearest_class[0]))
    if values.size and float(np.abs(values).max()) <= 0:
        st.caption(f"Neuron n{neuron} carries no relevance in any {nearest_class} training image.")
    else:
        samples.thumbnail_grid(
            table,
            proto,
            key="proto",
            columns=3,
            captions=[
                f"#{j} · {table['true class'].iat[j]} · R={v:.3g}"
                for j, v in zip(proto, values, strict=True)
            ],
        )

if fill_heatmaps is not None:  # last: the rest of the page shows while they compute
    fill_heatmaps()
fill_neuron_map()
if heatmap_jobs.heatmaps_module() is not None:  # once this page is drawn: the next rows' maps
    heatmap_jobs.prepare_ahead(r, state.neighbours_in(order, i))
