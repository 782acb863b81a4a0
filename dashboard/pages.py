"""The one table of dashboard pages: navigation, links, ``?view=`` and benches derive from it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    key: str  # its URL path and ``?view=`` value
    title: str
    icon: str
    script: str  # relative to app.py (what st.Page, st.switch_page and st.page_link take)
    section: str  # navigation group


PAGES = (
    Page(
        "worklist",
        "Worklist",
        ":material/checklist:",
        "views/worklist.py",
        "Explore",
    ),
    Page(
        "overview",
        "Overview",
        ":material/insights:",
        "views/overview.py",
        "Explore",
    ),
    Page(
        "map",
        "Relevance map",
        ":material/scatter_plot:",
        "views/relevance_map.py",
        "Explore",
    ),
    Page(
        "inspector",
        "Sample inspector",
        ":material/frame_inspect:",
        "views/inspector.py",
        "Explore",
    ),
    Page(
        "score",
        "Score a new image",
        ":material/upload_file:",
        "views/score_image.py",
        "Use",
    ),
    Page(
        "new-run",
        "New run",
        ":material/add_circle:",
        "views/new_run.py",
        "Use",
    ),
)
BY_KEY = {page.key: page for page in PAGES}
KEYS = tuple(BY_KEY)
DEFAULT = "worklist"  # a clinician's first question: which images should I not trust?


def script(key: str) -> str:
    return BY_KEY[key].script
