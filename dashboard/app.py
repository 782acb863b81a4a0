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

from dashboard import components, identity, loaders, sidebar, state  # noqa: E402
from dashboard.pages import DEFAULT, PAGES  # noqa: E402

st.set_page_config(
    page_title="NERO Explorer",
    # A local file: a material icon would be fetched from Google's font host (no outside requests).
    page_icon=str(Path(__file__).with_name("favicon.png")),
    layout="wide",
    initial_sidebar_state="expanded",
)

LOGO = Path(__file__).with_name("logo.svg")
if LOGO.is_file():
    st.logo(str(LOGO), size="large")
identity.require_sign_in()
cfg = components.config()
runs = state.available_runs(cfg)
legacy_view = state.read_url(cfg, runs)

# The default page never changes: a page marked default is served at "/" only, so making
# the linked page the default broke its own /path (a "Page not found" over the page).
pages = {
    page.key: st.Page(
        page.script,
        title=page.title,
        icon=page.icon,
        url_path=page.key,
        default=page.key == DEFAULT,
    )
    for page in PAGES
}
sections: dict[str, list] = {}
for page in PAGES:
    sections.setdefault(page.section, []).append(pages[page.key])
nav = st.navigation(sections)
view = next((k for k, p in pages.items() if p.title == nav.title), DEFAULT)
st.session_state[state.VIEW] = view
if legacy_view is not None and legacy_view != view:  # an old ?view= link: its page
    st.switch_page(pages[legacy_view], query_params=state.url_params())
for problem in st.session_state.pop(state.URL_PROBLEMS, []):
    st.warning(problem, icon=":material/link_off:")

sidebar.sidebar(cfg, runs)
try:
    nav.run()
except Exception as exc:  # noqa: BLE001 — a page error must never show a traceback
    components.page_failed(exc)
state.write_url()
loaders.warm_model_code()
