"""Which detector to trust on *this* model and data, estimated from in-distribution data alone.

No evaluation OOD set is used. Two kinds of proxy OOD data stand in for it:

- **held-out classes**: each ID class in turn is left out when the method is fitted, and its
  test images play the OOD set against the other classes' test images (an in-distribution look
  the detector was never fitted on; the classifier itself still knows the class);
- **corruptions** of ID test images (:mod:`nero.data.corruptions`: patch shuffles, local blur,
  noise, pixelation, two scenes mixed): generic, lesion-free departures from the ID look.

Every method gets an AUROC per proxy; the recommendation is the best mean, with the spread
over proxies as its uncertainty, and how far ahead of the runner-up it is.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nero.data.corruptions import CORRUPTIONS, corrupt
from nero.data.images import ImageReadError, read_image
from nero.data.preprocess import Preprocessing
from nero.detect.metrics import auroc
from nero.detect.registry import Evidence, OODMethod, capped_rows
from nero.detect.relevance import Head, head_relevance
from nero.files import release_pages
from nero.model.classifier import LoadedModel, capture_head_input
from nero.run.conformal import COMBINATION_NAMES, COMBINATIONS, FUSION, combine, p_values
from nero.run.recommendation import Recommendation

# ID test images corrupted per corruption kind: enough for a stable AUROC, few enough that
# the extra forward passes cost a fraction of the evaluation.
PROXY_IMAGES = 96
PROXY_BATCH = 32
# A held-out class needs this many test images to give an AUROC worth counting.
MIN_HELD_OUT = 5
# The proxies refit every method once per class: on a large run they use at most this many
# training / test rows (each class in proportion), so their time and memory stop growing.
PROXY_TRAIN_ROWS = 10_000
PROXY_TEST_ROWS = 5_000

MethodFactory = Callable[[str], OODMethod]


def corrupted_evidence(
    model: LoadedModel,
    paths: Sequence[Path],
    preprocessing: Preprocessing,
    epsilon: float,
    head: Head,
    kinds: Sequence[str] = CORRUPTIONS,
    seed: int = 0,
) -> dict[str, Evidence]:
    """Features, logits and relevance of each corruption of ``paths`` (unreadable ones skipped).

    The images are prepared as the model sees them (:mod:`nero.data.preprocess`), corrupted
    as pixels, and the frame-invariant input's outside is blanked again afterwards.
    """
    prepared = []
    for path in paths:
        try:
            prepared.append(preprocessing.prepare(read_image(path)))
        except ImageReadError:
            continue
    if not prepared:
        return {}
    clean = (
        torch.stack(
            [torch.from_numpy(np.asarray(p.image).copy()).permute(2, 0, 1) for p in prepared]
        ).float()
        / 255.0
    )
    side = clean.shape[-1]
    inside = torch.stack(
        [torch.tensor(p.inside if p.inside is not None else np.ones((side, side), bool))
         for p in prepared]
    )  # fmt: skip
    device = next(model.model.parameters()).device
    out = {}
    with capture_head_input(model.head) as store, torch.inference_mode():
        for kind in kinds:
            feats, logits = [], []
            corrupted = corrupt(clean, kind, seed)
            for chunk, mask in zip(
                corrupted.split(PROXY_BATCH), inside.split(PROXY_BATCH), strict=True
            ):
                y = model.model(preprocessing.renormalise(chunk, mask).to(device))
                feats.append(store["features"].flatten(1).float().cpu().numpy())
                logits.append(y.float().cpu().numpy())
            f = np.concatenate(feats).astype(np.float64)
            out[kind] = Evidence(f, np.concatenate(logits), head_relevance(f, head, epsilon))
    return out


ProxyScores = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # method → proxy → (ID, OOD)


def proxy_scores(
    names: Sequence[str],
    make: MethodFactory,
    train: Evidence,
    test: Evidence,
    corrupted: dict[str, Evidence],
    head: Head,
) -> ProxyScores:
    """Every method's scores on every proxy: ``{method: {proxy: (ID scores, OOD scores)}}``."""
    results: ProxyScores = {name: {} for name in names}
    for name in names:
        if corrupted:
            method = make(name).fit(train, head)
            id_scores = method.score(test)
            for kind, data in corrupted.items():
                results[name][f"corrupt:{kind}"] = (id_scores, method.score(data))
        for held in np.unique(train.labels):
            keep_train = train.labels != held
            out = test.labels == held
            if keep_train.all() or out.sum() < MIN_HELD_OUT or out.all():
                continue
            method = make(name).fit(train.rows(np.flatnonzero(keep_train)), head)
            scores = method.score(test)
            results[name][f"held-out:{int(held)}"] = (scores[~out], scores[out])
    return results


def aurocs_of(scores: ProxyScores) -> dict[str, dict[str, float]]:
    """AUROC (×100) of every method on every proxy: ``{method: {proxy: auroc}}``."""
    return {m: {p: auroc(i, o) for p, (i, o) in by.items()} for m, by in scores.items()}


def proxy_aurocs(*args: Any, **kwargs: Any) -> dict[str, dict[str, float]]:
    """AUROC (×100) of every method on every proxy, ``{method: {proxy: auroc}}``, from
    :func:`proxy_scores` (same arguments)."""
    return aurocs_of(proxy_scores(*args, **kwargs))


def fused_proxy_scores(
    scores: ProxyScores,
    members: Sequence[str],
    proxies: Sequence[str] | None = None,
    combination: str = "fisher",
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``fusion``'s scores on each proxy (or those named), made as the run makes them: each
    member's p-values against the proxy's ID images (an ID image against the others:
    leave-one-out), combined by ``combination``."""
    fused = {}
    for proxy in proxies if proxies is not None else scores[members[0]]:
        id_p, ood_p = [], []
        for m in members:
            id_scores, ood_scores = scores[m][proxy]
            ood_p.append(p_values(id_scores, ood_scores))
            # an ID image among the others: (#{others ≥ s} + 1) / n = #{all ≥ s} / n
            n = id_scores.size
            id_p.append((p_values(id_scores, id_scores) * (n + 1) - 1) / n)
        fused[proxy] = (combine(id_p, combination), combine(ood_p, combination))
    return fused


# fusion's members are sought among this many of the best single methods on the proxies, and a
# third member must raise the pair's mean proxy AUROC by this much (a small gain is noise).
FUSION_POOL = 8
MIN_THIRD_GAIN = 0.5


@dataclass(frozen=True)
class FusionChoice:
    """fusion's members and combination, chosen on some proxies, and the mean proxy AUROCs
    that chose them."""

    members: list[str]
    single: float  # the first member alone
    pair: float
    third_gain: float | None  # what the best third member would add (None: no candidate)
    combination: str = "fisher"
    fused: float = float("nan")  # the chosen fusion's mean proxy AUROC
    others: dict[str, float] = dataclasses.field(default_factory=dict)  # other combinations'

    def why(self) -> str:
        first, partner = self.members[:2]
        if len(self.members) > 2:
            third = f"; {self.members[2]} added as it raises that by {self.third_gain:.1f}"
        elif self.third_gain is not None:
            third = (
                f"; no third member (the best would add {self.third_gain:+.1f}, less than "
                f"{MIN_THIRD_GAIN})"
            )
        else:
            third = ""
        others = ", ".join(f"{COMBINATION_NAMES[c]} {v:.1f}" for c, v in self.others.items())
        return (
            f"{first} (the best single method on the ID-only proxies, mean AUROC "
            f"{self.single:.1f}) with {partner}, the partner that raises fusion's mean proxy "
            f"AUROC most ({self.pair:.1f}){third}; combined by "
            f"{COMBINATION_NAMES[self.combination]}, the combination whose fusion does best on "
            f"the proxies ({self.fused:.1f}" + (f"; {others}" if others else "") + "), and "
            "calibrated on ID test images like every method. fusion's own proxy AUROCs are "
            "cross-validated: on each proxy, members and combination chosen on the other proxies"
        )


def _members_for(
    scores: ProxyScores, pool: Sequence[str], proxies: Sequence[str], combination: str
) -> FusionChoice:
    """The best single method of ``pool``, its best partner, and a third only if it adds
    :data:`MIN_THIRD_GAIN`, fused by ``combination``."""

    def mean_auroc(members: Sequence[str]) -> float:
        if len(members) == 1:
            return float(np.mean([auroc(*scores[members[0]][p]) for p in proxies]))
        fused = fused_proxy_scores(scores, members, proxies, combination)
        return float(np.mean([auroc(i, o) for i, o in fused.values()]))

    single = {m: mean_auroc([m]) for m in pool}
    first = max(pool, key=lambda m: (single[m], -pool.index(m)))
    pairs = {m: mean_auroc([first, m]) for m in pool if m != first}
    partner = max(pairs, key=lambda m: (pairs[m], -pool.index(m)))
    rest = {m: mean_auroc([first, partner, m]) for m in pool if m not in (first, partner)}
    members, gain, fused = [first, partner], None, pairs[partner]
    if rest:
        third = max(rest, key=lambda m: (rest[m], -pool.index(m)))
        gain = rest[third] - pairs[partner]
        if gain >= MIN_THIRD_GAIN:
            members.append(third)
            fused = rest[third]
    return FusionChoice(members, single[first], pairs[partner], gain, combination, fused)


def choose_fusion(
    scores: ProxyScores, ranking: Sequence[str], proxies: Sequence[str] | None = None
) -> FusionChoice | None:
    """fusion's members and combination from the proxies alone (no OOD image): for each of
    :data:`~nero.run.conformal.COMBINATIONS`, the members :func:`_members_for` picks; the
    combination whose fusion has the best mean AUROC on ``proxies`` wins (ties: the order of
    ``COMBINATIONS``). The pool is the :data:`FUSION_POOL` best single methods *on these
    proxies* (``ranking`` only breaks ties), so a choice made on some proxies never looks at
    the others. None: fewer than 2 methods."""
    usable = [m for m in ranking if m in scores and scores[m]]
    if len(usable) < 2:
        return None
    proxies = list(proxies if proxies is not None else scores[usable[0]])
    mean = {m: float(np.mean([auroc(*scores[m][p]) for p in proxies])) for m in usable}
    pool = sorted(usable, key=lambda m: (-mean[m], usable.index(m)))[:FUSION_POOL]
    choices = [_members_for(scores, pool, proxies, c) for c in COMBINATIONS]
    best = max(choices, key=lambda c: (c.fused, -choices.index(c)))
    others = {c.combination: c.fused for c in choices if c is not best}
    return dataclasses.replace(best, others=others)


def cross_validated_fusion(scores: ProxyScores, ranking: Sequence[str]) -> dict[str, float]:
    """fusion's AUROC on each proxy with members and combination chosen on the *other*
    proxies, so that the choice is not judged on the evidence that made it (an honest
    candidate)."""
    proxies = list(next(iter(scores[m] for m in ranking if m in scores and scores[m]), {}))
    out = {}
    for held in proxies:
        choice = choose_fusion(scores, ranking, [p for p in proxies if p != held])
        if choice is None:
            continue
        fused = fused_proxy_scores(scores, choice.members, [held], choice.combination)
        out[held] = auroc(*fused[held])
    return out


def recommend(results: dict[str, dict[str, float]], class_names: Sequence[str]) -> Recommendation:
    """The method with the best mean proxy AUROC, the evidence, and its uncertainty."""

    def label(proxy: str) -> str:
        kind, _, value = proxy.partition(":")
        return f"held-out class {class_names[int(value)]}" if kind == "held-out" else value

    means = {m: float(np.mean(list(r.values()))) for m, r in results.items() if r}
    if not means:
        raise ValueError("no proxy OOD set could be built (too few ID test images or classes)")
    ranked = sorted(means, key=means.get, reverse=True)
    best = ranked[0]
    values = np.array(list(results[best].values()))
    margin = means[best] - means[ranked[1]] if len(ranked) > 1 else float("nan")
    return Recommendation(
        method=best,
        mean_proxy_auroc=round(means[best], 2),
        spread=round(float(values.std()), 2),  # over proxies
        worst_proxy_auroc=round(float(values.min()), 2),
        runner_up=ranked[1] if len(ranked) > 1 else None,
        margin=round(margin, 2),
        ranking={m: round(means[m], 2) for m in ranked},
        proxies={m: {label(p): round(v, 2) for p, v in results[m].items()} for m in ranked},
        protocol=(
            "ID data only: each ID class held out in turn against the others' test images, "
            f"and {len(CORRUPTIONS)} corruptions of up to {PROXY_IMAGES} ID test images; "
            "no evaluation OOD set is used"
        ),
    )


def proxy_rows(evidence: Evidence, rows: np.ndarray, cap: int, seed: int) -> Evidence:
    """The capped share of ``rows`` (every class in proportion) of ``evidence``, which may be
    memory-mapped: only the chosen rows are read."""
    picked = evidence.rows(np.asarray(rows)[capped_rows(evidence.labels[rows], cap, seed)])
    release_pages(evidence.features, evidence.logits, evidence.relevance)
    return picked


def recommend_for_run(
    names: Sequence[str],
    make: MethodFactory,
    evidence: Evidence,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    model: LoadedModel,
    test_paths: Sequence[Path],
    preprocessing: Preprocessing,
    epsilon: float,
    head: Head,
    class_names: Sequence[str],
    seed: int = 0,
    fusion: bool = True,
) -> Recommendation:
    """The recommendation ``nero evaluate`` writes into ``report.json``.

    With ``fusion``, ``fusion`` is a candidate like any method: its members are chosen on the
    proxies (:func:`choose_fusion`, recorded in the recommendation) and its proxy AUROCs are
    cross-validated over the proxies (:func:`cross_validated_fusion`).

    ``evidence`` holds every sample of the run, with labels; the proxies use at most
    :data:`PROXY_TRAIN_ROWS` of ``train_rows`` and :data:`PROXY_TEST_ROWS` of ``test_rows``.
    """
    train = proxy_rows(evidence, train_rows, PROXY_TRAIN_ROWS, seed)
    test = proxy_rows(evidence, test_rows, PROXY_TEST_ROWS, seed)
    pick = np.linspace(0, len(test_paths) - 1, min(PROXY_IMAGES, len(test_paths)))
    subset = [test_paths[int(i)] for i in np.unique(pick.round().astype(int))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small folds clip PCA sizes
        corrupted = corrupted_evidence(model, subset, preprocessing, epsilon, head, seed=seed)
        scores = proxy_scores(names, make, train, test, corrupted, head)
    results = aurocs_of(scores)
    means = {m: float(np.mean(list(r.values()))) for m, r in results.items() if r}
    ranking = sorted(means, key=means.get, reverse=True)
    choice = choose_fusion(scores, ranking) if fusion else None
    if choice is not None:
        results[FUSION] = cross_validated_fusion(scores, ranking)
    rows = {"train": len(train.labels), "test": len(test.labels)}
    return dataclasses.replace(
        recommend(results, class_names),
        proxy_rows=rows,
        fusion_members=choice.members if choice is not None else [],
        fusion_why=choice.why() if choice is not None else "",
        fusion_combination=choice.combination if choice is not None else "fisher",
    )
