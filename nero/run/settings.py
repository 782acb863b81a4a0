"""The settings of one evaluation (what ``nero evaluate``'s flags become)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nero.data.folders import DEFAULT_IMG_SIZE
from nero.model.extract import DEFAULT_BATCH_SIZE


@dataclass
class EvaluateConfig:
    arch: str
    img_size: int = DEFAULT_IMG_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str | None = None
    methods: list[str] = field(default_factory=lambda: ["nero"])
    preset: str = "default"
    nero_params: dict = field(default_factory=dict)
    seed: int = 42
    checkpoint: str | None = None
    progress_bar: bool = True
    masks_root: Path | None = None  # prepared data's masks/ folder, if any
    overwrite: bool = False  # replace an existing run at ``out`` (only once the new one is done)
    recommend: bool = True  # estimate from ID data alone which method to trust (report.json)
    engine: str = "local"  # the forward pass: "local" or "ray" (nero.model.extract.ENGINES)
    address: str | None = None  # Ray cluster to join ("auto"); None starts a local one
