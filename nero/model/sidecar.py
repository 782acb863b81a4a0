"""The JSON file saved next to a trained checkpoint, so users need not repeat flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nero.files import write_json


def sidecar_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_suffix(".json")


def read_sidecar(checkpoint: str | Path) -> dict[str, Any]:
    """Architecture, class names, image size, normalisation — or ``{}`` if there is none."""
    path = sidecar_path(checkpoint)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"sidecar {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"sidecar {path} must hold a JSON object")
    return data


def write_sidecar(checkpoint: str | Path, info: dict[str, Any]) -> Path:
    path = sidecar_path(checkpoint)
    write_json(path, info)
    return path
