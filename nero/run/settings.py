"""The settings of one evaluation (what ``nero evaluate``'s flags become)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nero import DEFAULT_BATCH_SIZE, DEFAULT_SEED
from nero.data.preprocess import DEFAULT_IMG_SIZE, Preprocessing


@dataclass
class EvaluateConfig:
    arch: str
    img_size: int = DEFAULT_IMG_SIZE
    frame: str = "none"  # nero.data.preprocess.FRAME_MODES: how the model was trained to see
    frame_source: str = "given"  # "sidecar", "given", or "no record" (a model from before)
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str | None = None
    methods: list[str] = field(default_factory=lambda: ["nero"])
    preset: str = "default"
    nero_params: dict = field(default_factory=dict)
    seed: int = DEFAULT_SEED
    checkpoint: str | None = None
    progress_bar: bool = True
    masks_root: Path | None = None  # prepared data's masks/ folder, if any
    overwrite: bool = False  # replace an existing run at ``out`` (only once the new one is done)
    control: bool = True  # the acquisition control: score frame-only copies (report.json)
    recommend: bool = True  # estimate from ID data alone which method to trust (report.json)
    engine: str = "local"  # the forward pass: "local" or "ray" (nero.model.extract.ENGINES)
    address: str | None = None  # Ray cluster to join ("auto"); None starts a local one

    @property
    def preprocessing(self) -> Preprocessing:
        """What the model sees of each image (recorded in the manifest)."""
        return Preprocessing(self.img_size, self.frame)
