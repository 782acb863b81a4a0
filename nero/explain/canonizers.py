"""Our zennit canonizers: DenseNet (zennit has none) and a CP-LRP canonizer for transformers.

A canonizer rewrites a model temporarily (inside ``Composite.context``) so that LRP rules
apply cleanly, and restores it exactly on exit. Both are :mod:`zennit.canonizers` subclasses,
so they compose with zennit's composites and are removed by its context manager.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.densenet import DenseNet, _DenseLayer
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, MergeBatchNorm


# ------------------------------------------------------------------ DenseNet
class DenseNetMergeBatchNorm(MergeBatchNorm):
    """Merge every BatchNorm that directly consumes a convolution's output into that conv.

    In torchvision's DenseNet that is ``features.conv0 → features.norm0`` and, inside every
    dense layer, ``conv1 → norm2``. zennit's ``SequentialMergeBatchNorm`` cannot be used:
    it pairs leaves by registration order, which wrongly pairs a dense layer's ``conv2``
    with the next layer's ``norm1`` (that one normalises the *concatenation* of all earlier
    outputs). The remaining (pre-activation) BatchNorms get zennit's Pass rule.
    """

    def apply(self, root_module: nn.Module) -> list[MergeBatchNorm]:
        pairs: list[tuple[nn.Module, nn.Module]] = []
        for module in root_module.modules():
            if isinstance(module, DenseNet):
                feats = module.features
                if hasattr(feats, "conv0") and hasattr(feats, "norm0"):
                    pairs.append((feats.conv0, feats.norm0))
            elif isinstance(module, _DenseLayer):
                pairs.append((module.conv1, module.norm2))
        instances = []
        for conv, norm in pairs:
            instance = self.copy()
            instance.register((conv,), norm)
            instances.append(instance)
        return instances


def _densenet_forward(self: DenseNet, x: torch.Tensor) -> torch.Tensor:
    """DenseNet.forward with the final ReLU and global pool as modules (so rules attach)."""
    out = self.canonizer_relu(self.features(x))
    out = torch.flatten(self.canonizer_pool(out), 1)
    return self.classifier(out)


class DenseNetForwardCanonizer(AttributeCanonizer):
    """Replace the functional ``F.relu`` + ``F.adaptive_avg_pool2d`` of the head with modules.

    Without this the global pool is seen by autograd only, which spreads relevance evenly
    over the positions instead of by their activation (zennit's Norm rule).
    """

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(_name: str, module: nn.Module) -> dict | None:
        if isinstance(module, DenseNet):
            return {
                "forward": _densenet_forward.__get__(module),
                "canonizer_relu": nn.ReLU(),
                "canonizer_pool": nn.AdaptiveAvgPool2d((1, 1)),
            }
        return None

    def copy(self) -> DenseNetForwardCanonizer:
        return DenseNetForwardCanonizer()


class DenseNetCanonizer(CompositeCanonizer):
    """torchvision DenseNet: conv-BN merges plus module-form final ReLU and pool."""

    def __init__(self) -> None:
        super().__init__((DenseNetMergeBatchNorm(), DenseNetForwardCanonizer()))


# ------------------------------------------------------------------ transformers (CP-LRP)
def _layer_norm_detached(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm with its scale 1/σ detached: linear in ``x`` (Ali et al. 2022, LN-rule)."""
    dims = tuple(range(-len(self.normalized_shape), 0))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    out = (x - mean) / torch.sqrt(var + self.eps).detach()
    if self.weight is not None:
        out = out * self.weight
    if self.bias is not None:
        out = out + self.bias
    return out


def _gelu_gated(self: nn.GELU, x: torch.Tensor) -> torch.Tensor:
    """GELU(x) = x·Φ(x) with the gate Φ detached: relevance passes unchanged (identity rule)."""
    if self.approximate == "tanh":
        gate = 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    else:
        gate = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    return x * gate.detach()


def _attention_detached(
    self: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = True,
    attn_mask: torch.Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-head attention with the softmax attention matrix detached (AH-rule, CP-LRP).

    Relevance then flows through the values only, mixed across tokens by the (constant)
    attention weights. Dropout is not applied: attribution runs in eval mode.
    """
    if key_padding_mask is not None or attn_mask is not None or is_causal:
        raise NotImplementedError("CP-LRP attention does not support attention masks")
    if not self.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    e, h = self.embed_dim, self.num_heads
    if self._qkv_same_embed_dim:
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
    b_q, b_k, b_v = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
    q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    def heads(t: torch.Tensor) -> torch.Tensor:  # B×N×E → B×H×N×E/H
        return t.reshape(t.shape[0], t.shape[1], h, e // h).transpose(1, 2)

    q, k, v = heads(q), heads(k), heads(v)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(e // h), dim=-1).detach()
    out = (weights @ v).transpose(1, 2).reshape(query.shape[0], query.shape[1], e)
    out = self.out_proj(out)
    if not self.batch_first:
        out = out.transpose(0, 1)
    if not need_weights:
        return out, None
    return out, weights.mean(dim=1) if average_attn_weights else weights


class TransformerCanonizer(AttributeCanonizer):
    """CP-LRP canonizer: detach the non-linear parts of a transformer so that gradient×input
    on the canonized model is LRP with the AH-rule (attention) and LN-rule (LayerNorm) of
    Ali et al., "XAI for Transformers: Better Explanations through Conservative Propagation"
    (ICML 2022), plus AttnLRP's identity rule for GELU.

    Applies to exact ``nn.LayerNorm`` (not subclasses such as ConvNeXt's ``LayerNorm2d``,
    which normalise another axis), ``nn.GELU`` and ``nn.MultiheadAttention`` without extra
    key/value biases. Forward values are unchanged (up to float rounding).
    """

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(_name: str, module: nn.Module) -> dict | None:
        if type(module) is nn.LayerNorm:
            return {"forward": _layer_norm_detached.__get__(module)}
        if type(module) is nn.GELU:
            return {"forward": _gelu_gated.__get__(module)}
        if (
            isinstance(module, nn.MultiheadAttention)
            and module.bias_k is None
            and not module.add_zero_attn
        ):
            return {"forward": _attention_detached.__get__(module)}
        return None

    def copy(self) -> TransformerCanonizer:
        return TransformerCanonizer()
