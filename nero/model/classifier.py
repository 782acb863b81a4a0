"""Build torchvision classifiers, load user checkpoints, find the final linear head."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from nero.data.preprocess import DEFAULT_IMG_SIZE
from nero.model.head import Head

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")
# Keys under which training scripts commonly nest the state_dict.
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded into the requested architecture."""


# Architectures from timm (optional extra `pip install .[timm]`) carry this prefix, e.g.
# "timm/deit_small_patch16_224", the paper's second model.
TIMM_PREFIX = "timm/"


def available_architectures() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _build_timm(name: str, num_classes: int, img_size: int | None) -> nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise ValueError(
            f"architecture {TIMM_PREFIX}{name} needs timm: pip install 'nero-explorer[timm]'"
        ) from exc
    if not timm.is_model(name):
        raise ValueError(f"timm has no architecture {name!r} (e.g. deit_small_patch16_224)")
    kwargs: dict[str, object] = {"pretrained": False, "num_classes": num_classes}
    if img_size is not None and ("vit" in name or "deit" in name):
        kwargs["img_size"] = img_size  # transformers fix their input size at construction
    return timm.create_model(name, **kwargs)


def build_model(arch: str, num_classes: int, img_size: int | None = None) -> nn.Module:
    """A randomly initialised torchvision (or timm/…) classifier; never downloads weights."""
    if arch.startswith(TIMM_PREFIX):
        return _build_timm(arch.removeprefix(TIMM_PREFIX), num_classes, img_size)
    if arch not in available_architectures():
        raise ValueError(
            f"unknown architecture {arch!r}; torchvision offers e.g. resnet18, densenet121, "
            "vgg11_bn, efficientnet_b0, convnext_tiny, vit_b_16"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
    kwargs: dict[str, object] = {"weights": None, "num_classes": num_classes}
    # torchvision's vision transformers fix their input size at construction.
    if img_size is not None and arch.startswith("vit_"):
        kwargs["image_size"] = img_size
    return torchvision.models.get_model(arch, **kwargs)


# ------------------------------------------------------------------ head finding
def find_head(model: nn.Module, img_size: int = DEFAULT_IMG_SIZE) -> tuple[str, nn.Linear]:
    """The final ``nn.Linear`` whose output is the model's output, found by tracing one forward.

    Works for any architecture that ends in a linear layer (ResNet, DenseNet, VGG,
    EfficientNet, MobileNet, ConvNeXt, ViT, …) without per-family code.
    """
    linears = {m: name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to use as the head")
    outputs: dict[nn.Module, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _i, out: outputs.__setitem__(mod, out)) for m in linears
    ]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            out = model(torch.zeros(1, 3, img_size, img_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for module, value in outputs.items():
        if value is out or (value.shape == out.shape and torch.equal(value, out)):
            return linears[module], module
    raise ValueError(
        f"the output of {type(model).__name__} is not produced by a linear layer; "
        "NERO needs a final nn.Linear head"
    )


@contextmanager
def capture_head_input(head: nn.Linear) -> Iterator[dict[str, torch.Tensor]]:
    """Record the head's input during forward passes; the hook is always removed on exit."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        store["features"] = args[0]

    handle = head.register_forward_pre_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def head_arrays(head: nn.Linear) -> Head:
    weight = head.weight.detach().cpu().double().numpy()
    bias = (
        head.bias.detach().cpu().double().numpy()
        if head.bias is not None
        else np.zeros(weight.shape[0])
    )
    return Head(weight=weight, bias=bias)


# ------------------------------------------------------------------ checkpoints
def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_state_dict(
    path: str | Path, trust_pickle: bool = False
) -> dict[str, torch.Tensor] | nn.Module:
    """Tensors of a checkpoint (safetensors or torch), or a pickled module if trusted."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        if not trust_pickle and "weights_only" in str(exc):
            raise CheckpointError(
                f"{path} holds a pickled Python object (e.g. a whole model), which can run "
                "arbitrary code when loaded. Re-save it as a state_dict, or pass --trust-pickle "
                "if you trust its source."
            ) from exc
        raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint: {exc}") from exc
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        for key in NESTED_STATE_KEYS:
            if isinstance(obj.get(key), dict | nn.Module):
                obj = obj[key]
                break
        if isinstance(obj, nn.Module):
            return obj
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            prefix = "module."  # saved from DataParallel / DDP
            return {k.removeprefix(prefix): v for k, v in tensors.items()}
    raise CheckpointError(f"{path} contains no state_dict (found {type(obj).__name__})")


def classes_in_state_dict(state: dict[str, torch.Tensor], head_name: str, path: Path) -> int:
    key = f"{head_name}.weight"
    if key not in state:
        raise CheckpointError(
            f"{path} has no '{key}' tensor, so it is not a checkpoint of this architecture "
            f"(its first keys: {list(state)[:4]})"
        )
    return int(state[key].shape[0])


@dataclass
class LoadedModel:
    model: nn.Module
    head_name: str
    head: nn.Linear
    num_classes: int
    checkpoint_sha256: str | None


def load_classifier(
    arch: str,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    img_size: int = DEFAULT_IMG_SIZE,
    trust_pickle: bool = False,
) -> LoadedModel:
    """A classifier in eval mode with its head located; class count read from the checkpoint."""
    if checkpoint is None:
        if num_classes is None:
            raise ValueError("without a checkpoint, num_classes is needed to build the model")
        model = build_model(arch, num_classes, img_size)
        head_name, head = find_head(model, img_size)
        return LoadedModel(model.eval(), head_name, head, num_classes, None)

    path = Path(checkpoint)
    state = read_state_dict(path, trust_pickle)
    digest = sha256_of(path)
    if isinstance(state, nn.Module):
        model = state
        head_name, head = find_head(model.eval(), img_size)
        found = head.out_features
    else:
        probe = build_model(arch, 2, img_size)
        head_name, _ = find_head(probe, img_size)
        found = classes_in_state_dict(state, head_name, path)
        model = build_model(arch, found, img_size)
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise CheckpointError(f"{path} does not match architecture {arch!r}: {exc}") from exc
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"{path} does not match architecture {arch!r}: "
                f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
                f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})"
            )
        head = dict(model.named_modules())[head_name]
    if num_classes is not None and found != num_classes:
        raise CheckpointError(
            f"{path} has a {found}-class head but the data has {num_classes} classes"
        )
    return LoadedModel(model.eval(), head_name, head, found, digest)
