"""Which LRP rules attribute which architecture: a declarative table (spec §8, STYLE: zennit).

The rules come from a declarative table, architecture family → :class:`RuleSet` (zennit
composite + canonizers). Where no sound rule set exists the result is plain
Gradient×Input and says so in ``method`` and ``note``. Attribution runs inside zennit's
``Composite.context``, so canonizers and hooks are removed on exit, and every module's
train/eval flag is restored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import VGG, DenseNet, ResNet, VisionTransformer
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat
from zennit.core import BasicHook, Composite, Stabilizer
from zennit.rules import ClampMod
from zennit.torchvision import ResNetCanonizer, VGGCanonizer
from zennit.types import Convolution

from nero.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from nero.explain.canonizers import DenseNetCanonizer, TransformerCanonizer

LRP, CP_LRP, GRADIENT_X_INPUT = "lrp", "cp-lrp", "gradient×input"
CompositeFactory = Callable[[torch.Tensor, bool], Composite]


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
