"""What one heatmap says, once for every caller: the CLI's summary lines and the dashboard's
fields come from the same :class:`HeatmapView`, so they never disagree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nero.explain.field_of_view import FrameShare

# Below this share of the starting relevance reaching the pixels (or with no relevance at
# all), a map's pattern is numerical dust: it is said so and drawn faint, not saturated.
NEGLIGIBLE_CONSERVATION = 1e-3


@dataclass(frozen=True)
class HeatmapView:
    """One heatmap on the original image's grid, with the run's reading of it."""

    kind: str
    method: str
    rule_set: str
    conservation: float | None
    note: str
    relevance: np.ndarray  # on the original image's grid, where the image and masks line up
    seen: np.ndarray | None  # bool, same grid: the tissue the model saw (None: all of it)
    scale: float | None  # the run's colour scale for this kind (None: no calibration)
    unusual: bool | None  # an OOD map stronger than normal images' (None: not an OOD map)
    evidence_share: float | None  # % of normal test images with less OOD evidence

    @property
    def negligible(self) -> bool:
        """Almost nothing of the starting relevance reached the pixels, or the map is empty."""
        if not np.any(np.asarray(self.relevance) != 0):
            return True
        c = self.conservation
        return c is not None and bool(np.isfinite(c)) and abs(c) < NEGLIGIBLE_CONSERVATION

    def fields(self) -> dict[str, Any]:
        """A plain dict (cacheable by Streamlit) of what the views show."""
        out = {
            "relevance": self.relevance,
            "seen": self.seen,
            "method": self.method,
            "rule_set": self.rule_set,
            "conservation": self.conservation,
            "note": self.note,
            "scale": self.scale,
            "unusual": self.unusual,
            "negligible": self.negligible,
        }
        if self.evidence_share is not None:
            out["evidence_share"] = self.evidence_share
        return out

    def summary(
        self, frame: FrameShare | None = None, factor: float = 1.0, of: str = ""
    ) -> list[str]:
        """Plain-text lines: how it was computed (of what: ``of``), the frame, the colour
        scale, the evidence."""
        conservation = (
            "" if self.conservation is None else f", conservation {self.conservation:.3g}"
        )
        subject = f" of {of}" if of else ""
        lines = [f"{self.kind} heatmap{subject}, {self.method} ({self.rule_set}){conservation}"]
        if self.negligible:
            lines.append(NEGLIGIBLE_WORDS)
        if frame is not None and frame.on_frame:
            lines.append(frame.sentence())
        if factor > 1.0:
            lines.append(
                f"colour scale: {factor:.3g}× the run's (stronger than normal images' maps)"
            )
        if self.unusual is not None:
            verdict = "unusual" if self.unusual else "no unusual evidence"
            share = "" if self.evidence_share is None else (
                f" (more than {self.evidence_share:.0f} % of normal test images show)"
            )  # fmt: skip
            lines.append(f"OOD evidence: {verdict}{share}")
        if self.method == "gradient×input" and self.note:
            lines.append(f"note: {self.note}")
        return lines


NEGLIGIBLE_WORDS = (
    "negligible evidence: less than 0.1 % of the starting relevance reaches the pixels; the "
    "pattern is not to be read"
)


def heatmap_view(result: Any, scale: Any = None) -> HeatmapView:
    """The view of a heatmap result; ``scale``: the run's
    :class:`nero.run.heatmap_scale.HeatmapScale`, when it has one."""
    unusual = share = pixel = None
    if scale is not None:
        pixel = scale.pixel(result.kind)
        unusual = scale.unusual(result)
        if unusual is not None:
            share = scale.kinds[result.kind].share_of_normal_below(result.relevance)  # S×S mass
    return HeatmapView(
        kind=str(getattr(result, "kind", "")),
        method=str(getattr(result, "method", "")),
        rule_set=str(getattr(result, "rule_set", "")),
        conservation=getattr(result, "conservation", None),
        note=str(getattr(result, "note", "") or ""),
        relevance=result.original() if hasattr(result, "original") else result.relevance,
        seen=result.seen() if hasattr(result, "seen") else None,
        scale=pixel,
        unusual=unusual,
        evidence_share=share,
    )
