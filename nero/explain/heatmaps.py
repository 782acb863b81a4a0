"""Input-space heatmaps: LRP from a class logit, and NERO's OOD heatmap (spec §8).

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

The distance shares are signed, so their positive and negative parts are propagated as a
batch of two and added (LRP is linear in the starting relevance); ``conservation`` then
measures how much of the total mass ``Σ|R0|`` reaches the pixels. Several heatmaps of one
image share one batched pass (:func:`compute_heatmaps`).

The rules come from a declarative table, architecture family → :class:`RuleSet` (zennit
composite + canonizers). Where no sound rule set exists the result is plain
Gradient×Input and says so in ``method`` and ``note``. Attribution runs inside zennit's
``Composite.context``, so canonizers and hooks are removed on exit, and every module's
train/eval flag is restored.
"""

from __future__ import annotations

import functools
import io
import json
import textwrap
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models import VGG, DenseNet, ResNet, VisionTransformer
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat
from zennit.core import BasicHook, Composite, Stabilizer, stabilize
from zennit.rules import ClampMod
from zennit.torchvision import ResNetCanonizer, VGGCanonizer
from zennit.types import Convolution

from nero.data.folders import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from nero.data.images import read_image
from nero.explain.canonizers import DenseNetCanonizer, TransformerCanonizer
from nero.explain.envelope import (
    ENVELOPE_FILE,
    HEATMAP_DIR,
    Envelope,
    EnvelopeError,
    envelope_gate,
    fit_envelope,
    gate_points,
)
from nero.files import save_npz
from nero.model.classifier import LoadedModel, capture_head_input
from nero.run import checkpoint as run_model
from nero.run.directory import Run, read_run

KINDS = ("class", "nero", "ood", "distance")
FEATURE_KINDS = ("ood", "distance")  # start at the head's input, not at the logits
LRP, CP_LRP, GRADIENT_X_INPUT = "lrp", "cp-lrp", "gradient×input"
CACHE_VERSION = 4  # part of every cached heatmap's name: bumped when a kind's meaning changes
# Overlay colour scale: ± this percentile of |relevance|, so one extreme pixel does not
# wash out the rest of the map (values beyond it are drawn at full colour).
OVERLAY_PERCENTILE = 99.5
ENVELOPE_NOTE = (
    "envelope gate: at each spatial layer only what exceeds the class's training maximum "
    "passes relevance down; conservation = the share that reaches the pixels"
)
NO_ENVELOPE_NOTE = "no training envelope for this model: plain LRP of |deviation|"
# Denominator stabiliser where a gradient seed is divided by an activation (Gradient×Input).
SEED_EPSILON = 1e-6

CompositeFactory = Callable[[torch.Tensor, bool], Composite]
# Canonizers rewrite the model in place: two attributions at once on one model (two
# dashboard sessions) would merge BatchNorms twice. One attribution at a time.
_ATTRIBUTION_LOCK = threading.Lock()


# ------------------------------------------------------------------ result
@dataclass(frozen=True)
class Heatmap:
    """Signed input relevance of one image, summed over colour channels."""

    relevance: np.ndarray  # H×W float32 at the model's input resolution
    kind: str  # "class" | "nero" | "ood" | "distance"
    target: int | None  # class logit (class), centroid class (ood, distance), None (nero)
    predicted: int  # the model's predicted class for this image
    method: str  # "lrp" | "cp-lrp" | "gradient×input"
    rule_set: str  # e.g. "EpsilonPlusFlat + ResNetCanonizer"
    note: str  # caveats, e.g. why a fallback was used
    conservation: float  # Σ input relevance / starting relevance (see module docstring)

    def metadata(self) -> dict:
        meta = asdict(self)
        del meta["relevance"]
        return meta

    def save(self, path: str | Path) -> None:
        """Write ``.npz`` atomically: the map plus its metadata as JSON (no pickles)."""
        save_npz(path, relevance=self.relevance, meta=np.array(json.dumps(self.metadata())))

    @classmethod
    def load(cls, path: str | Path) -> Heatmap:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(relevance=z["relevance"].astype(np.float32), **meta)


# ------------------------------------------------------------------ rule-set table
@dataclass(frozen=True)
class RuleSet:
    """How one architecture family is attributed."""

    name: str  # shown on the result
    method: str  # LRP, CP_LRP or GRADIENT_X_INPUT
    model_class: type[nn.Module]  # the class the canonizers are written for
    composite: CompositeFactory | None  # (input, zero_bias) → composite; None: plain autograd
    # True: the modified backward pass carries relevance (zennit LRP rules), so the seed is
    # the starting relevance itself. False: it is a true gradient of a (canonized) model;
    # the seed is R0 / activation and relevance = gradient × input.
    carries_relevance: bool
    note: str = ""


def _zero_params(zero_bias: bool) -> list[str] | None:
    return ["bias"] if zero_bias else None


class NonNegativeZPlus(BasicHook):
    """The z⁺ rule for layers whose inputs are non-negative (after a ReLU), in one pass.

    zennit's ``ZPlus`` is AlphaBeta(1, 0): a second forward pass sends the negative inputs
    through the negative weights. Where no input is negative that term is identically zero,
    so this rule gives the same relevance at half the cost (tested against ``ZPlus``).
    Negative inputs, if any, are ignored, as in the original deep Taylor z⁺ rule.
    """

    def __init__(self, stabilizer: float = 1e-6, zero_params: list[str] | None = None) -> None:
        stabilize_fn = Stabilizer.ensure(stabilizer)
        super().__init__(
            input_modifiers=[lambda inputs: inputs.clamp(min=0)],
            param_modifiers=[ClampMod(min=0.0, zero_params=zero_params)],
            output_modifiers=[lambda output: output],
            gradient_mapper=lambda out_grad, outputs: [out_grad / stabilize_fn(outputs[0])],
            reducer=lambda inputs, gradients: inputs[0] * gradients[0],
        )


def _epsilon_plus_flat(canonizer: type, fast: bool = True) -> CompositeFactory:
    """Flat on the first layer, z⁺ on convolutions, ε on dense layers (zennit's CNN default).

    ``fast``: every convolution after the first takes post-ReLU input (ResNet, DenseNet),
    so z⁺ runs as :class:`NonNegativeZPlus`, with the same result.
    """

    def make(_x: torch.Tensor, zero_bias: bool) -> Composite:
        zero_params = _zero_params(zero_bias)
        layer_map = [(Convolution, NonNegativeZPlus(zero_params=zero_params))] if fast else []
        return EpsilonPlusFlat(
            layer_map=layer_map, zero_params=zero_params, canonizers=[canonizer()]
        )

    return make


def _epsilon_gamma_box(canonizer: type) -> CompositeFactory:
    """zennit's VGG recipe: z^B bounded by the normalised pixel range, γ on convs, ε on dense."""

    def make(x: torch.Tensor, zero_bias: bool) -> Composite:
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return EpsilonGammaBox(
            low=(0 - mean) / std,
            high=(1 - mean) / std,
            zero_params=_zero_params(zero_bias),
            canonizers=[canonizer()],
        )

    return make


RULE_SETS: dict[str, RuleSet] = {
    "resnet": RuleSet(
        "EpsilonPlusFlat + ResNetCanonizer",
        LRP,
        ResNet,
        _epsilon_plus_flat(ResNetCanonizer),
        carries_relevance=True,
        note="BatchNorm merged into convs; residual sums and pooling by the Norm rule",
    ),
    "densenet": RuleSet(
        "EpsilonPlusFlat + DenseNetCanonizer",
        LRP,
        DenseNet,
        _epsilon_plus_flat(DenseNetCanonizer),
        carries_relevance=True,
        note="conv→BatchNorm pairs merged; pre-activation BatchNorms pass relevance (Pass rule)",
    ),
    "vgg": RuleSet(
        "EpsilonGammaBox + VGGCanonizer",
        LRP,
        VGG,
        _epsilon_gamma_box(VGGCanonizer),
        carries_relevance=True,
        note="BatchNorm merged into convs; max-pooling routes relevance to the maximum",
    ),
    "vit": RuleSet(
        "CP-LRP: Gradient×Input + TransformerCanonizer",
        CP_LRP,
        VisionTransformer,
        lambda _x, _zero_bias: Composite(canonizers=[TransformerCanonizer()]),
        carries_relevance=False,
        note="attention softmax, LayerNorm scale and GELU gate detached (Ali et al. 2022 "
        "AH/LN rules, AttnLRP identity rule); biases and position embeddings absorb relevance",
    ),
}
# Architecture-name prefix → family (torchvision names; the first match wins).
FAMILIES: tuple[tuple[str, str], ...] = (
    ("resnet", "resnet"),
    ("resnext", "resnet"),
    ("wide_resnet", "resnet"),
    ("densenet", "densenet"),
    ("vgg", "vgg"),
    ("vit_", "vit"),
)
# Why families without a rule set fall back to Gradient×Input.
NO_RULES_BECAUSE: tuple[tuple[str, str], ...] = (
    ("efficientnet", "SiLU activations and squeeze-excitation gates"),
    ("mobilenet", "hard-swish activations and squeeze-excitation gates"),
    ("convnext", "channel LayerNorm, layer scale and GELU"),
    ("regnet", "squeeze-excitation gates"),
    ("swin", "shifted-window attention"),
    ("maxvit", "multi-axis attention and squeeze-excitation gates"),
)


def _fallback(arch: str, why: str) -> RuleSet:
    return RuleSet(
        "Gradient×Input (no LRP rules)",
        GRADIENT_X_INPUT,
        nn.Module,
        None,
        carries_relevance=False,
        note=f"fallback: no sound LRP rule set for {arch} ({why}); this is plain "
        "Gradient×Input, not LRP",
    )


# Plain Gradient×Input on request (e.g. as the baseline LRP is compared against).
PLAIN_GRADIENT_X_INPUT = RuleSet(
    "Gradient×Input", GRADIENT_X_INPUT, nn.Module, None, carries_relevance=False
)


def rule_set_for(arch: str, model: nn.Module) -> RuleSet:
    """The table entry for ``arch``; Gradient×Input (labelled) where there is none."""
    family = next((fam for prefix, fam in FAMILIES if arch.startswith(prefix)), None)
    if family is None:
        why = next((w for p, w in NO_RULES_BECAUSE if arch.startswith(p)), "no rule set registered")
        return _fallback(arch, why)
    rules = RULE_SETS[family]
    if not isinstance(model, rules.model_class):
        expected = rules.model_class.__name__
        why = f"the model is a {type(model).__name__}, not a torchvision {expected}"
        return _fallback(arch, why)
    return rules


# ------------------------------------------------------------------ attribution
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
    predicted = int(logits[0].argmax())
    note = rules.note
    if zero_bias and rules.composite is not None and rules.carries_relevance:
        note += "; biases left out of the LRP denominators"
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


# ------------------------------------------------------------------ runs
def load_run_model(run: Run) -> LoadedModel:
    """The run's classifier for attribution (checked against its sha256, kept loaded)."""
    return run_model.load_run_model(run, channels_last=True)


def _sample_path(run: Run, index: int) -> Path:
    if not 0 <= index < len(run.samples):
        raise ValueError(f"sample {index} is outside 0..{len(run.samples) - 1}")
    path = Path(run.samples["path"].iloc[index])
    if not path.is_absolute() and not path.exists() and (run.path / path).exists():
        path = run.path / path
    return path


def sample_image(run: Run, index: int) -> Image.Image:
    """The sample's image as RGB, decoded as the evaluation decoded it."""
    return read_image(_sample_path(run, index))


def _deviation(run: Run, index: int, target: int | None) -> tuple[np.ndarray, int, int]:
    """(deviation from the centroid, its class, its index in the detector)."""
    detector = run.detector
    features = np.asarray(run.features[index : index + 1], np.float64)
    relevance = np.asarray(run.relevance[index : index + 1], np.float64)
    explanation = detector.explain(features, relevance)
    if target is None:
        centroid = int(explanation.nearest_centroid[0])
        return explanation.deviation[0], int(explanation.nearest_class[0]), centroid
    rows = np.flatnonzero(detector.centroid_classes_ == int(target))
    if rows.size == 0:
        raise ValueError(f"the detector has no centroid of class {target}")
    d = detector.n_features_in_
    # The detector's own projection and calibration: the centroid its score would pick.
    diff = detector._project(relevance[:, :d])[0] - detector.centroids_[rows]
    dist = np.abs(diff).sum(1) if detector.distance == "l1" else np.sqrt((diff**2).sum(1))
    dist = dist / getattr(detector, "centroid_scale_", np.ones(len(detector.centroids_)))[rows]
    centroid = int(rows[int(np.argmin(dist))])
    return relevance[0, :d] - detector.raw_centroids_[centroid, :d], int(target), centroid


def ood_deviation(run: Run, index: int, target: int | None = None) -> tuple[np.ndarray, int]:
    """NERO's per-neuron deviation of one sample and the class of the centroid it is from.

    ``target=None``: the nearest centroid, exactly ``NERO.explain(...).deviation``.
    A class index: that class's nearest centroid instead ("how is it unlike class t?").
    """
    deviation, cls, _ = _deviation(run, index, target)
    return deviation, cls


def distance_contributions(
    run: Run, index: int, target: int | None = None
) -> tuple[np.ndarray, int]:
    """Each neuron's share of NERO's distance to the centroid; the shares sum to it.

    The projection is affine, so the gap to the centroid in PCA space is ``Jᵀ·deviation``
    (``J`` = how each neuron moves the projection); the L1 (L2) distance is then
    ``Σ_j deviation_j · (J·s)_j`` with ``s`` = sign(gap) (gap/‖gap‖), over the
    centroid's calibration scale where the detector has one.
    """
    detector = run.detector
    deviation, cls, centroid = _deviation(run, index, target)
    d = detector.n_features_in_
    jacobian = detector._project(detector.pca_mean_ + np.eye(d)) - detector._project(
        detector.pca_mean_[None, :]
    )
    gap = jacobian.T @ deviation
    if detector.distance == "l1":
        direction = np.sign(gap)
    else:
        direction = gap / max(float(np.linalg.norm(gap)), np.finfo(np.float64).tiny)
    scale = getattr(detector, "centroid_scale_", np.ones(len(detector.centroids_)))[centroid]
    return deviation * (jacobian @ direction) / scale, cls


def heatmap_cache_path(run: Run, index: int, kind: str, target: int | None) -> Path:
    name = f"{index}_{kind}_{'auto' if target is None else target}.v{CACHE_VERSION}.npz"
    return run.path / HEATMAP_DIR / name


def _save_quietly(save: Callable[[Path], None], path: Path) -> None:
    try:
        path.parent.mkdir(exist_ok=True)
        save(path)
    except OSError as exc:  # a read-only run still gets its result, just not cached
        warnings.warn(f"could not cache {path}: {exc}", stacklevel=3)


@functools.lru_cache(maxsize=4)
def _run_envelope(run_path: str, checkpoint_sha256: str | None) -> Envelope | None:
    run = read_run(run_path)
    loaded = load_run_model(run)
    if not gate_points(loaded.model):
        return None
    cache = run.path / HEATMAP_DIR / ENVELOPE_FILE
    n_classes = loaded.head.out_features
    if cache.is_file():
        try:
            envelope = Envelope.load(cache)
            envelope.check(loaded.model, n_classes)
            return envelope
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"refitting the unreadable envelope {cache}: {exc}", stacklevel=2)
    train = run.samples[run.samples["split"] == "id_train"]
    try:
        envelope = fit_envelope(
            loaded.model,
            [_sample_path(run, int(i)) for i in train["index"]],
            train["label"].astype(int).tolist(),
            n_classes,
            run.manifest["img_size"],
        )
    except EnvelopeError as exc:
        warnings.warn(f"no training envelope for {run.path}: {exc}", stacklevel=2)
        return None
    _save_quietly(envelope.save, cache)
    return envelope


def run_envelope(run: Run) -> Envelope | None:
    """The training envelope of the run's model (fitted once, kept in ``RUN/heatmaps/``).

    None where the architecture has no gate points or no training image can be read.
    """
    sha = run.manifest["model"].get("checkpoint_sha256")
    return _run_envelope(str(run.path.resolve()), sha)


def run_heatmaps(run: Run, index: int, wanted: Sequence[tuple[str, int | None]]) -> list[Heatmap]:
    """Heatmaps ``(kind, target)`` of sample ``index`` of a run, cached in ``RUN/heatmaps/``.

    Cached ones are loaded; the rest are computed together in one batched pass and saved
    as ``{index}_{kind}_{target}.v{N}.npz`` (``auto`` for the default target). The model
    and the training envelope are loaded once per run and kept.
    """
    for kind, target in wanted:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "nero" and target is not None:
            raise ValueError("the 'nero' heatmap starts from every class; it takes no target")
    found: dict[int, Heatmap] = {}
    for k, (kind, target) in enumerate(wanted):
        cache = heatmap_cache_path(run, index, kind, target)
        if cache.is_file():
            try:
                found[k] = Heatmap.load(cache)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                warnings.warn(f"ignoring unreadable cached heatmap {cache}: {exc}", stacklevel=2)
    missing = [k for k in range(len(wanted)) if k not in found]
    if missing:
        path = _sample_path(run, index)
        loaded = load_run_model(run)
        tensor = eval_transform(run.manifest["img_size"])(read_image(path)).unsqueeze(0)
        requests = []
        for k in missing:
            kind, target = wanted[k]
            deviation = None
            if kind == "ood":
                deviation, target = ood_deviation(run, index, target)
            elif kind == "distance":
                deviation, target = distance_contributions(run, index, target)
            requests.append(HeatmapRequest(kind, target, deviation))
        envelope = run_envelope(run) if any(r.kind == "ood" for r in requests) else None
        arch = run.manifest["model"]["arch"]
        computed = compute_heatmaps(
            loaded.model, loaded.head, tensor, arch, requests, envelope=envelope
        )
        for k, heat in zip(missing, computed, strict=True):
            found[k] = heat
            _save_quietly(heat.save, heatmap_cache_path(run, index, *wanted[k]))
    return [found[k] for k in range(len(wanted))]


def run_heatmap(run: Run, index: int, kind: str = "class", target: int | None = None) -> Heatmap:
    """One heatmap of a run sample: :func:`run_heatmaps` with a single ``(kind, target)``."""
    return run_heatmaps(run, index, [(kind, target)])[0]


# ------------------------------------------------------------------ drawing
def _title(heat: Heatmap, class_names: Sequence[str] | None) -> str:
    def name(c: int | None) -> str:
        if c is None:
            return "?"
        return class_names[c] if class_names is not None and c < len(class_names) else str(c)

    what = {
        "class": f"class heatmap: logit of {name(heat.target)}",
        "nero": "NERO relevance heatmap (all classes, softmax-weighted)",
        "ood": f"OOD heatmap: deviation from the {name(heat.target)} centroid",
        "distance": f"OOD heatmap: share of NERO's distance to the {name(heat.target)} centroid",
    }[heat.kind]
    return f"{what} (predicted {name(heat.predicted)})\n{heat.method}: {heat.rule_set}"


def overlay_png(
    image: Image.Image,
    heat: Heatmap,
    alpha: float = 0.5,
    out: str | Path | None = None,
    class_names: Sequence[str] | None = None,
) -> bytes:
    """The image with the signed relevance on top (red > 0 > blue, centred on zero).

    The heatmap is stretched over the whole image (the evaluation resize is a square
    resize, so that is where each pixel's relevance belongs). Opacity grows with |R| up
    to ``alpha``, so areas without relevance show the image itself.
    """
    from matplotlib import cm, colormaps, colors
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rel = np.asarray(heat.relevance, np.float64)
    lim = float(np.percentile(np.abs(rel), OVERLAY_PERCENTILE)) or float(np.abs(rel).max()) or 1.0
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
    right.imshow(rgba, extent=extent, interpolation="nearest")
    right.set_title(_title(heat, class_names), fontsize=8, pad=16)
    for ax in (left, right):
        ax.set_axis_off()
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=right, fraction=0.046, pad=0.04)
    bar.set_label(f"relevance (colour clipped at {OVERLAY_PERCENTILE}th pct of |R|)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    bar.ax.yaxis.get_offset_text().set_fontsize(7)  # the ×10ⁿ of tiny relevances
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
