"""Attribution: several input-space heatmaps of one image in one batched LRP pass.

Three kinds of starting relevance ``R0``, all propagated to the pixels with the same rules:

- ``"class"``: the target logit ``y_t`` (default: the predicted class) at the logits.
- ``"nero"``: NERO's starting relevance, ``R0 = softmax(y)`` at the logits. Through the
  head's ε-rule this gives every feature neuron exactly NERO's relevance
  ``R_j = Σ_k p_k a_j W_kj / y_k`` (spec §1); the bias share stays at the head.
- ``"ood"``: at the feature layer (the head's input), each neuron's deviation from the
  nearest class centroid, ``NERO.explain(...).deviation``, as a magnitude (``|deviation|``:
  a neuron is unlike its class whether it has too much relevance or too little), propagated
  through the **envelope gate** (:mod:`nero.explain.envelope`): at every layer with a spatial map
  only the part of an activation beyond anything the class showed in training passes
  relevance further down.
  *Which part of this image makes it unlike its class.*
- ``"distance"``: at the feature layer, each neuron's exact share of NERO's distance term,
  ``deviation_j · ∂d/∂R_j`` (the distance is piecewise linear in the deviation, so the
  shares sum to ``d(x)``). Red = pushes the sample away from its centroid, blue = pulls it
  back, which is what "unlike its class" means for the score; the deviation itself is
  signed by relevance, not by distance (bench/heatmaps.py compares both on the demo set).

- ``"neuron"``: one penultimate neuron (``target``) alone, seeded with its activation at the
  feature layer: a conditional heatmap (CRP's "where does this concept fire in this
  image", Achtibat et al. 2023) for the neurons that drive a sample's deviation.

The distance shares are signed, so their positive and negative parts are propagated as a
batch of two and added (LRP is linear in the starting relevance); ``conservation`` then
measures how much of the total mass ``Σ|R0|`` reaches the pixels. Several heatmaps of one
image share one batched pass (:func:`compute_heatmaps`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from zennit.core import stabilize

from nero.data.preprocess import ORIGINAL_SIDE, Geometry, Prepared
from nero.explain.envelope import Envelope, envelope_gate
from nero.explain.kinds import FEATURE_KINDS, KINDS
from nero.explain.rules import RuleSet, rule_set_for
from nero.files import save_npz
from nero.model.classifier import capture_head_input

ENVELOPE_NOTE = (
    "envelope gate: at each spatial layer only what exceeds the class's training maximum "
    "passes relevance down; conservation = the share that reaches the pixels"
)
NO_ENVELOPE_NOTE = "no training envelope for this model: plain LRP of |deviation|"
# Denominator stabiliser where a gradient seed is divided by an activation (Gradient×Input).
SEED_EPSILON = 1e-6
# Canonizers rewrite the model in place: two attributions at once on one model (two
# dashboard sessions) would merge BatchNorms twice. One attribution at a time.
_ATTRIBUTION_LOCK = threading.Lock()


@dataclass(frozen=True)
class Heatmap:
    """Signed input relevance of one image, summed over colour channels.

    ``relevance`` is on the model's S×S input (LRP's conservation and every mass compared
    across images live there); :meth:`original` puts it on the original image's grid, where
    masks and the image itself line up, with :meth:`seen` the tissue the model saw.
    """

    relevance: np.ndarray  # S×S float32 at the model's input resolution
    kind: str  # "class" | "nero" | "ood" | "distance"
    target: int | None  # class logit (class), centroid class (ood, distance), None (nero)
    predicted: int  # the model's predicted class for this image
    method: str  # "lrp" | "cp-lrp" | "gradient×input"
    rule_set: str  # e.g. "EpsilonPlusFlat + ResNetCanonizer"
    note: str  # caveats, e.g. why a fallback was used
    conservation: float  # Σ input relevance / starting relevance (see module docstring)
    geometry: dict | None = None  # nero.data.preprocess.Geometry.record(): where S×S came from
    tissue: np.ndarray | None = None  # bool S×S: the input pixels that carry the original

    def located(self, prepared: Prepared) -> Heatmap:
        """This map, knowing where its input came from in the original image."""
        return replace(self, geometry=prepared.geometry.record(), tissue=prepared.tissue)

    def original(self, long_side: int | None = ORIGINAL_SIDE) -> np.ndarray:
        """The map on the original image's grid (0 where the model saw nothing of it)."""
        if self.geometry is None:
            return np.asarray(self.relevance, np.float32)
        return Geometry.from_record(self.geometry).to_original(self.relevance, long_side)

    def seen(self, long_side: int | None = ORIGINAL_SIDE) -> np.ndarray:
        """Bool mask on the original's grid of the tissue the model saw."""
        if self.geometry is None or self.tissue is None:
            return np.ones(np.shape(self.original(long_side)), bool)
        geometry = Geometry.from_record(self.geometry)
        return geometry.to_original(self.tissue.astype(np.float32), long_side) > 0.5

    def metadata(self) -> dict:
        meta = asdict(self)
        del meta["relevance"], meta["tissue"]
        return meta

    def save(self, path: str | Path) -> None:
        """Write ``.npz`` atomically: the map plus its metadata as JSON (no pickles)."""
        arrays = {"relevance": self.relevance, "meta": np.array(json.dumps(self.metadata()))}
        if self.tissue is not None:
            arrays["tissue"] = np.asarray(self.tissue, bool)
        save_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Heatmap:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            tissue = z["tissue"].astype(bool) if "tissue" in z.files else None
            return cls(relevance=z["relevance"].astype(np.float32), tissue=tissue, **meta)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the attribution; every module's own train/eval flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


@dataclass(frozen=True)
class HeatmapRequest:
    """One heatmap to compute: its kind, target and (feature kinds) starting relevance."""

    kind: str = "class"
    target: int | None = None
    deviation: np.ndarray | None = None  # at the features, for the kinds in FEATURE_KINDS

    @property
    def rows(self) -> int:
        """Batch rows it takes: a signed feature relevance goes as its two signs."""
        return 2 if self.kind == "distance" else 1


def _seeds(
    requests: Sequence[HeatmapRequest], logits: torch.Tensor, features: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[int | None]]:
    """Starting relevance at the logits and at the features (one row per batch row)."""
    at_logits = torch.zeros_like(logits)
    at_features = torch.zeros_like(features)
    targets: list[int | None] = []
    row = 0
    for req in requests:
        if req.kind in FEATURE_KINDS:
            dev = torch.as_tensor(
                np.asarray(req.deviation), dtype=features.dtype, device=features.device
            )
            if req.kind == "ood":  # how far each neuron is from the centroid, either way
                at_features[row] = dev.abs()
            else:
                at_features[row], at_features[row + 1] = dev.clamp(min=0), dev.clamp(max=0)
            targets.append(req.target)
        elif req.kind == "nero":
            at_logits[row] = torch.softmax(logits[row].detach(), dim=0)
            targets.append(None)
        elif req.kind == "neuron":
            at_features[row, int(req.target)] = features[row, int(req.target)].detach()
            targets.append(int(req.target))
        else:
            t = int(logits[row].argmax()) if req.target is None else int(req.target)
            at_logits[row, t] = logits[row, t].detach()
            targets.append(t)
        row += req.rows
    return at_logits, at_features, targets


def _check_request(head: nn.Linear, req: HeatmapRequest) -> None:
    kind, target, deviation = req.kind, req.target, req.deviation
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "class" and target is not None and not 0 <= int(target) < head.out_features:
        raise ValueError(f"target class {target} is outside 0..{head.out_features - 1}")
    if kind == "neuron" and (target is None or not 0 <= int(target) < head.in_features):
        raise ValueError(
            f"a neuron heatmap needs a neuron in 0..{head.in_features - 1}, got {target}"
        )
    if kind in FEATURE_KINDS:
        if deviation is None:
            raise ValueError(
                f"a {kind!r} heatmap needs its starting relevance at the features "
                "(ood_deviation / distance_contributions)"
            )
        if np.shape(deviation) != (head.in_features,):
            raise ValueError(
                f"feature relevance has shape {np.shape(deviation)}, "
                f"expected ({head.in_features},): "
                "one value per input neuron of the head"
            )
        if not np.isfinite(deviation).all():
            raise ValueError("deviation contains NaN/inf")


def _check_image(image: torch.Tensor) -> torch.Tensor:
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image must be a 1×3×H×W tensor, got shape {tuple(image.shape)}")
    return image


def compute_heatmaps(
    model: nn.Module,
    head: nn.Linear,
    image: torch.Tensor,
    arch: str,
    requests: Sequence[HeatmapRequest],
    *,
    zero_bias: bool = False,
    rules: RuleSet | None = None,
    envelope: Envelope | None = None,
) -> list[Heatmap]:
    """Several heatmaps of one image (1×3×H×W) in one batched forward and backward pass.

    Rows seeded at the logits and rows seeded at the features share the pass: the seeds go
    into one ``autograd.grad`` over both tensors (LRP is linear in its starting relevance).
    ``envelope`` gates the ``"ood"`` rows (:mod:`nero.explain.envelope`) under LRP rules;
    without one
    the OOD heatmap is plain LRP of ``|deviation|``.
    ``zero_bias=True`` leaves biases out of the LRP denominators (LRP rules only), so
    relevance is conserved layer by layer; the default keeps them, as zennit does, and
    the bias share is lost on the way down (``conservation`` < 1).
    ``rules`` overrides the table (e.g. :data:`PLAIN_GRADIENT_X_INPUT` for a baseline).
    The model is unchanged afterwards: canonizers and hooks are removed, modes restored.
    """
    image = _check_image(image)
    if not requests:
        return []
    for req in requests:
        _check_request(head, req)
    rules = rule_set_for(arch, model) if rules is None else rules
    gate = envelope is not None and rules.carries_relevance and rules.composite is not None
    if gate:
        envelope.check(model, head.out_features)
        if any(req.kind == "ood" and req.target is None for req in requests):
            raise ValueError(
                "an OOD heatmap through the envelope needs its centroid's class as target "
                "(ood_deviation returns it)"
            )
    device = next(model.parameters()).device
    batch = sum(req.rows for req in requests)
    x = image.to(device, torch.float32).expand(batch, -1, -1, -1).clone().requires_grad_(True)
    row_classes = [
        (req.target if req.kind == "ood" else None) for req in requests for _ in range(req.rows)
    ]
    composite = rules.composite(x, zero_bias) if rules.composite is not None else None
    with (
        _ATTRIBUTION_LOCK,
        _eval_mode(model),
        torch.enable_grad(),
        capture_head_input(head) as store,  # entered first: sees the raw features
        composite.context(model) if composite is not None else nullcontext(),
        envelope_gate(model, envelope, row_classes) if gate else nullcontext(),
    ):
        logits = model(x)
        features = store["features"]
        at_logits, at_features, targets = _seeds(requests, logits, features)
        if not rules.carries_relevance:
            at_logits = at_logits / stabilize(logits.detach(), SEED_EPSILON)
            at_features = at_features / stabilize(features.detach(), SEED_EPSILON)
        (grad,) = torch.autograd.grad((logits, features), x, grad_outputs=(at_logits, at_features))
    relevance = (grad if rules.carries_relevance else grad * x.detach()).detach().double()
    starts = torch.cat([at_logits, at_features], dim=1).detach().double()
    if not rules.carries_relevance:  # undo the division: the seed is R0 again
        starts = torch.cat([at_logits * logits, at_features * features], dim=1).detach().double()
    note = rules.note
    if zero_bias and rules.composite is not None and rules.carries_relevance:
        note += "; biases left out of the LRP denominators"
    return _heatmaps(
        requests, targets, relevance, starts, int(logits[0].argmax()), rules, note, gate
    )


def _heatmaps(
    requests: Sequence[HeatmapRequest],
    targets: list[int | None],
    relevance: torch.Tensor,
    starts: torch.Tensor,
    predicted: int,
    rules: RuleSet,
    note: str,
    gate: bool,
) -> list[Heatmap]:
    """One :class:`Heatmap` per request from the batch's input relevance and seeds."""
    heatmaps, row = [], 0
    for req, target in zip(requests, targets, strict=True):
        rows = slice(row, row + req.rows)
        row += req.rows
        # Each row carries R0 of one sign: conservation = signed mass in / mass out.
        start = starts[rows].sum(dim=1)
        mass = float(start.abs().sum())
        reached = float((relevance[rows].sum(dim=(1, 2, 3)) * start.sign()).sum())
        extra = ""
        if req.kind == "ood":
            extra = ENVELOPE_NOTE if gate else NO_ENVELOPE_NOTE
        heatmaps.append(
            Heatmap(
                relevance=relevance[rows].sum(dim=(0, 1)).cpu().numpy().astype(np.float32),
                kind=req.kind,
                target=None if target is None else int(target),
                predicted=predicted,
                method=rules.method,
                rule_set=rules.name + (" + envelope gate" if gate and req.kind == "ood" else ""),
                note="; ".join(n for n in (note, extra) if n),
                conservation=reached / mass if mass > 0 else float("nan"),
            )
        )
    return heatmaps


def compute_heatmap(
    model: nn.Module,
    head: nn.Linear,
    image: torch.Tensor,
    arch: str,
    kind: str = "class",
    target: int | None = None,
    deviation: np.ndarray | None = None,
    *,
    zero_bias: bool = False,
    rules: RuleSet | None = None,
    envelope: Envelope | None = None,
) -> Heatmap:
    """One heatmap: :func:`compute_heatmaps` with a single request."""
    request = HeatmapRequest(kind, target, deviation)
    return compute_heatmaps(
        model, head, image, arch, [request], zero_bias=zero_bias, rules=rules, envelope=envelope
    )[0]
