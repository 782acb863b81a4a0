"""NERO Explorer: the Streamlit entry point (`nero dashboard` starts it).

    streamlit run dashboard/app.py -- --runs-root runs [--run RUN_DIR]

Pages live in ``views/`` (a ``pages/`` folder would also be auto-registered by Streamlit's
older multipage mode). This file sets up the page, the sidebar run picker, navigation and the
shareable URL (``?run=NAME&view=VIEW&sample=INDEX``).
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from dashboard import components, loaders, sidebar, state  # noqa: E402
from dashboard.pages import DEFAULT, PAGES  # noqa: E402

st.set_page_config(
    page_title="NERO Explorer",
    page_icon=":material/biotech:",
    layout="wide",
    initial_sidebar_state="expanded",
)

LOGO = Path(__file__).with_name("logo.svg")
if LOGO.is_file():
    st.logo(str(LOGO), size="large")
loaders.configure_torch()
cfg = components.config()
runs = state.available_runs(cfg)
wanted_view = state.read_url(cfg, runs) or DEFAULT

pages = {
    page.key: st.Page(
        page.script,
        title=page.title,
        icon=page.icon,
        url_path=page.key,
        default=page.key == wanted_view,
    )
    for page in PAGES
}
sections: dict[str, list] = {}
for page in PAGES:
    sections.setdefault(page.section, []).append(pages[page.key])
nav = st.navigation(sections)
view = next((k for k, p in pages.items() if p.title == nav.title), DEFAULT)
st.session_state[state.VIEW] = view

sidebar.sidebar(cfg, runs)
try:
    nav.run()
except Exception as exc:  # noqa: BLE001 — a page error must never show a traceback
    components.page_failed(exc)
state.write_url(view)
