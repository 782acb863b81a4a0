"""What a run recommends (``report.json["recommended"]``), typed, and the method every front
door shows by default. Light on purpose (no torch): the dashboard's pages read it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Recommendation:
    """The method with the best mean AUROC on ID-only proxies, and the evidence for it."""

    method: str
    mean_proxy_auroc: float
    spread: float  # standard deviation over the proxies
    worst_proxy_auroc: float
    runner_up: str | None
    margin: float  # mean proxy AUROC ahead of the runner-up
    ranking: dict[str, float]  # every candidate's mean proxy AUROC, best first
    proxies: dict[str, dict[str, float]]  # method → proxy (in words) → AUROC
    protocol: str
    proxy_rows: dict[str, int] = field(default_factory=dict)  # rows the proxies used
    fusion_members: list[str] = field(default_factory=list)  # chosen on the proxies
    fusion_why: str = ""
    fusion_combination: str = "fisher"  # chosen on the proxies too (older runs: Fisher)

    def record(self) -> dict[str, Any]:
        """As ``report.json`` holds it."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> Recommendation | None:
        """From ``report.json``; None when the run has none (or one this version cannot read)."""
        if not isinstance(record, dict):
            return None
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in record.items() if k in known})
        except TypeError:  # a field missing: a run older than the recommendation's format
            return None

    def sentence(self) -> str:
        """The recommendation in one sentence, with the evidence it rests on."""
        return (
            f"recommended for this model and data: {self.method} (mean AUROC "
            f"{self.mean_proxy_auroc:.1f} ± {self.spread:.1f} on ID-only proxies; "
            f"runner-up {self.runner_up}, {self.margin:.1f} behind)"
        )


def default_method(methods: list[str], recommendation: Recommendation | None) -> str:
    """The method shown and used for verdicts unless the user picks another: the run's
    recommendation, else NERO, else the first scored."""
    if recommendation is not None and recommendation.method in methods:
        return recommendation.method
    return "nero" if "nero" in methods else methods[0]
