"""Where the model runs: the device a name means, and exact float32 arithmetic on CUDA."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device(name)


@contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """Convolutions in true float32 on CUDA (PyTorch lets cuDNN use TF32 by default).

    TF32 rounds inputs to 10 mantissa bits: features would differ from a CPU pass by ~1e-3
    relative, and a whitened detector magnifies that along low-variance directions.
    """
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous
