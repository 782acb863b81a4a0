"""Creating a run from the "New run" form: validation with actionable messages, then the engine.

The same entry point as ``nero evaluate`` (:func:`nero.run.pipeline.evaluate_request`), with every
input checked first so the page can say exactly which field is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
COMMON_ARCHS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
    "vgg11_bn",
    "vgg16_bn",
    "efficientnet_b0",
    "mobilenet_v3_large",
    "convnext_tiny",
    "vit_b_16",
)
Progress = Callable[[str, float], None]


class FormError(ValueError):
    """One field of the form is wrong; ``field`` names it, the message says what to do."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass
class RunRequest:
    name: str
    arch: str
    checkpoint: str = ""  # empty: random weights
    data: str = ""  # prepared folder, or empty with the three below
    id_train: str = ""
    id_test: str = ""
    ood: str = ""  # lines "NAME=DIR"
    img_size: int | None = None  # None: the checkpoint's sidecar value, else 224 (as the CLI)
    methods: list[str] = field(default_factory=lambda: ["nero"])
    preset: str = "default"
    overwrite: bool = False


def parse_ood(text: str) -> dict[str, str]:
    sets: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        set_name, sep, folder = line.partition("=")
        set_name, folder = set_name.strip(), folder.strip()
        if not sep or not set_name or not folder:
            raise FormError(
                "ood", f"OOD line {number} ({line!r}) must look like NAME=/path/to/folder"
            )
        if set_name in sets:
            raise FormError("ood", f"the OOD set name {set_name!r} is used twice")
        sets[set_name] = folder
    if not sets:
        raise FormError("ood", "give at least one OOD set, one per line: NAME=/path/to/folder")
    return sets


def _folder(field_name: str, text: str, what: str) -> Path:
    if not text.strip():
        raise FormError(field_name, f"enter the {what} folder")
    path = Path(text.strip()).expanduser()
    if not path.is_dir():
        raise FormError(field_name, f"the {what} folder {path} does not exist (or is not a folder)")
    return path


def validate(request: RunRequest, runs_root: Path) -> Path:
    """Check the cheap things first; returns the run folder to write."""
    from nero.detect.registry import available_methods
    from nero.model.classifier import available_architectures

    if not RUN_NAME.match(request.name):
        raise FormError(
            "name",
            "a run name uses letters, digits, '-', '_' or '.', starts with a letter or digit "
            "and has at most 64 characters",
        )
    out = runs_root / request.name
    if out.exists() and not request.overwrite:
        raise FormError(
            "name",
            f"a run named {request.name!r} exists; pick another name or "
            "tick 'Replace an existing run'",
        )
    if request.arch not in available_architectures():
        raise FormError(
            "arch",
            f"{request.arch!r} is not a torchvision architecture (e.g. resnet18, "
            "densenet121, efficientnet_b0, vit_b_16)",
        )
    if request.checkpoint.strip() and not Path(request.checkpoint.strip()).expanduser().is_file():
        raise FormError("checkpoint", f"the checkpoint {request.checkpoint.strip()} does not exist")
    if request.img_size is not None and not 16 <= int(request.img_size) <= 1024:
        raise FormError("img_size", "the image size must be 0 (automatic) or 16 to 1024 pixels")
    if "nero" not in request.methods:
        raise FormError("methods", "keep NERO among the methods: every view explains with it")
    unknown = [m for m in request.methods if m not in available_methods()]
    if unknown or not request.methods:
        raise FormError(
            "methods", "choose at least one method" if not unknown else f"unknown methods {unknown}"
        )
    if request.data.strip():
        _folder("data", request.data, "prepared data")
    else:
        _folder("id_train", request.id_train, "ID training")
        _folder("id_test", request.id_test, "ID test")
        for set_name, folder in parse_ood(request.ood).items():
            _folder("ood", folder, f"OOD set {set_name!r}")
    return out


def create_run(request: RunRequest, runs_root: Path, progress: Progress) -> Path:
    """Validate, then the engine's one evaluation entry point; engine errors pass through."""
    from nero.model.sidecar import read_sidecar
    from nero.run.pipeline import EvaluationRequest, Folders, evaluate_request
    from nero.run.staging import OutputError

    out = validate(request, runs_root)
    checkpoint = (
        Path(request.checkpoint.strip()).expanduser() if request.checkpoint.strip() else None
    )
    try:
        sidecar = read_sidecar(checkpoint) if checkpoint else {}
    except ValueError as exc:
        raise FormError("checkpoint", str(exc)) from exc
    if sidecar.get("arch") and sidecar["arch"] != request.arch:
        raise FormError(
            "arch",
            f"the checkpoint's sidecar JSON says it is a {sidecar['arch']}, not a "
            f"{request.arch}; choose {sidecar['arch']}",
        )
    if request.data.strip():
        folders = Folders(data=Path(request.data.strip()).expanduser())
    else:
        folders = Folders(
            id_train=Path(request.id_train.strip()).expanduser(),
            id_test=Path(request.id_test.strip()).expanduser(),
            ood={k: Path(v).expanduser() for k, v in parse_ood(request.ood).items()},
        )
    progress("reading the image folders and the model", 0.0)
    try:
        return evaluate_request(
            EvaluationRequest(
                folders,
                out,
                checkpoint=Path(checkpoint).expanduser() if checkpoint else None,
                arch=request.arch,
                img_size=request.img_size,
                embedding=None,  # the page computes the map with its own spinner
                settings=dict(
                    methods=sorted(dict.fromkeys(request.methods), key=lambda m: m != "nero"),
                    preset=request.preset,
                    progress_bar=False,
                    overwrite=request.overwrite,
                ),
            ),
            progress,
        )
    except OutputError as exc:  # e.g. the run name's folder is not a run, or holds the data
        raise FormError("name", str(exc)) from exc
