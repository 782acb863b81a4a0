"""Score a new image: is it in-distribution for this run's model, and why (not)?"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import (
    components,
    explanation,
    heatmap_jobs,
    imaging,
    loaders,
    samples,
    state,
    uploads,
    verdicts,
)
from nero.detect.registry import method_label
from nero.run.checkpoint import run_img_size
from nero.run.scoring import feature_methods, methods_for, nearest_train
from nero.run.verdicts import verdict_table
from nero.tables import safe_csv

NEIGHBOURS = 6

name, r = components.require_run()
components.header(
    "Score a new image",
    "Is a new image in-distribution for this model? Upload one or more images: the run's "
    "detector scores them against its training data, and NERO explains the verdict the same "
    "way as for the run's own samples.",
)
chosen = state.active_method(name, r)  # the detector the worklist and inspector show
needs = methods_for(r, chosen)
method = chosen if needs is not None else "nero"
if needs is None:
    st.info(
        f"{method_label(chosen)} needs more than an image's features to score it (ODIN: its "
        "input gradients), so new images are scored with NERO here."
    )
files = st.file_uploader(
    f"Images (PNG, JPEG, BMP, TIFF or WebP; up to {uploads.MAX_UPLOAD_MB} MB each)",
    type=list(uploads.IMAGE_TYPES),
    accept_multiple_files=True,
    max_upload_size=uploads.MAX_UPLOAD_MB,
    key="upload",
)
if not files:
    st.info(
        "Nothing uploaded yet. Drop images above; they stay in this browser session only and "
        "are not written to disk."
    )
    st.stop()

if len(files) > uploads.MAX_FILES:
    st.warning(
        f"{len(files)} files uploaded; scoring the first {uploads.MAX_FILES}. "
        "To score a whole folder, create a new run from it instead."
    )
images, names, digests = [], [], []
for f in files[: uploads.MAX_FILES]:
    data = f.getvalue()
    decoded, error = uploads.decode(f.name, data)
    if error:
        st.error(error)
        continue
    changes = [*decoded.notes, uploads.resize_note(decoded, run_img_size(r))]
    changes = [c for c in changes if c]
    if changes:
        st.info(
            f"**{f.name}**: " + "; ".join(changes) + ".",
            icon=":material/info:",
        )
    images.append(decoded.image)
    names.append(f.name)
    digests.append(hashlib.sha256(data).hexdigest())
if not images:
    st.stop()

try:
    with st.spinner("Loading the model (once per run)…"):
        scorer = loaders.scorer(r, needs or ("nero",))
except Exception as exc:  # a moved, replaced or damaged checkpoint: say what to do
    st.error(f"The run's model could not be loaded: {exc}")
    st.stop()
result = scorer.score_images(images)
expl = result.explanation
table = loaders.table(r)
thr = verdicts.thresholds(r, method)
shown = result.scores[method]
probs = scorer.probabilities(result.logits)
preds = probs.argmax(axis=1)

summary = pd.DataFrame(
    {
        "image": names,
        "predicted class": [r.class_names[p] for p in preds],
        "confidence %": (100 * probs.max(axis=1)).round(1),
        f"{method_label(method)} score": shown.to_numpy(),
        "% of normal images scoring lower": thr.percentile(shown.to_numpy()).round(),
        "verdict": [verdicts.phrase(s, thr) for s in shown],
    }
)
st.dataframe(summary, width="stretch", hide_index=True)
st.caption(verdicts.rule_in_words(thr))
st.download_button(
    "Scores (CSV)",
    safe_csv(summary).encode(),
    file_name=f"{name}-new-images.csv",
    mime="text/csv",
    icon=":material/download:",
)

k = 0
if len(images) > 1:
    k = st.selectbox(
        "Explain image", list(range(len(images))), format_func=lambda j: names[j], key="explain"
    )
score = float(shown.iat[k])
d = result.features.shape[1]
nearest_class = r.class_names[int(expl.nearest_class[k])]

st.divider()
left, mid, right = st.columns([2, 2, 2], gap="large")
with left:
    st.image(imaging.upscale(np.asarray(images[k])), width="stretch", caption=names[k])
with mid:
    st.markdown(f"### {names[k]}")
    st.markdown(
        f"Predicted: **{r.class_names[preds[k]]}** ({100 * probs[k, preds[k]]:.1f} %)  \n"
        f"Nearest centroid: **{nearest_class}**"
    )
    verdicts.verdict_badge(score, thr, method_label(method))
with right:
    explanation.class_probabilities(r.class_names, probs[k])

explanation.why_this_score(
    r, expl, k, result.relevance[k], d, verdicts.verdict_of(score, thr), key="new"
)

st.subheader("Where in the image")
fill_heatmaps = None
if heatmap_jobs.heatmaps_module() is None:
    st.info("Heatmaps are unavailable in this installation; everything else still works.")
else:
    relevance = np.asarray(result.relevance[k : k + 1], np.float64)
    fill_heatmaps = explanation.heatmap_views(
        np.asarray(images[k]),
        lambda target: heatmap_jobs.image_heatmaps(
            str(r.path), digests[k], images[k], relevance, target
        ),
        r.class_names,
        int(preds[k]),
        key=f"new-hm-{digests[k][:12]}",
        file_stem=f"{name}-{names[k].rsplit('.', 1)[0]}",
    )

st.subheader("Closest training images")
near, dist = nearest_train(r, result.relevance[k], k=NEIGHBOURS, space=loaders.train_space(r))
samples.nearest_images(table, near, dist, key="new-near", scale=loaders.neighbour_scale(r))

st.subheader("Other methods")
others = [m for m in feature_methods(r) if m != "nero"]
if not others:
    st.caption("This run scored NERO only.")
elif st.toggle(
    f"Score with the run's {len(others)} other methods too",
    key="compare",
    help="Fits them on the run's training features once (a few seconds to a minute).",
):
    with st.spinner("Fitting the other methods on the run's training features…"):
        full = loaders.scorer(r, None)
    all_scores = full.score_images([images[k]]).scores.iloc[0]
    rows = [
        {
            "method": method_label(row["method"]),
            "score": row["score"],
            "% of normal images scoring lower": row["percentile"],
            "verdict": verdicts.STYLE[row["verdict"]][2],
        }
        for row in verdict_table(r, all_scores.to_dict())
    ]
    st.dataframe(pd.DataFrame(rows), width="stretch", hide_index=True)

if fill_heatmaps is not None:  # last: the rest of the page shows while they compute
    fill_heatmaps()
