"""Who is reviewing: the signed-in identity, the local user on loopback, or a typed name.

Served beyond loopback, the server either requires Streamlit's OIDC sign-in (``oidc``) or was
started with ``--no-auth`` (``open``): then every page says so, and a typed name is recorded
as unverified. Nobody chooses their own identity where sign-in exists.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

import streamlit as st

from dashboard import components

NAME_KEY = "reviewer-name"


@dataclass(frozen=True)
class Reviewer:
    name: str
    identity: str  # nero.run.reviews.IDENTITIES


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's bare uid)
        return "local user"


def require_sign_in() -> None:
    """Every page's gate: on an ``oidc`` server, nothing is shown before sign-in; on an
    ``open`` one, a warning heads every page."""
    access = components.config().access
    if access == "open":
        st.warning(
            "This dashboard is served beyond this machine **without sign-in** (`--no-auth`): "
            "anyone who reaches it can read the run and mark reviews, and marks are recorded "
            "as unverified names.",
            icon=":material/lock_open:",
        )
    if access != "oidc" or st.user.get("is_logged_in", False):
        return
    st.title("NERO Explorer")
    st.info("Sign in to review this run: every mark records who made it.")
    st.button("Sign in", icon=":material/login:", on_click=st.login, type="primary")
    st.stop()


def sign_out_button(where=st.sidebar) -> None:
    if components.config().access == "oidc" and st.user.get("is_logged_in", False):
        where.caption(f"Signed in as **{current().name}**")
        where.button("Sign out", icon=":material/logout:", on_click=st.logout, key="sign-out")


def current() -> Reviewer | None:
    """The reviewer of this session, or None while an ``open`` server has no typed name."""
    access = components.config().access
    if access == "oidc":
        user = st.user
        return Reviewer(str(user.get("email") or user.get("name") or user.get("sub")), "oidc")
    if access == "open":
        typed = " ".join(str(st.session_state.get(NAME_KEY, "")).split())
        return Reviewer(typed, "unverified") if typed else None
    return Reviewer(_local_user(), "local")


def name_input(where=st) -> None:
    """The typed name an ``open`` server records (unverified); nothing elsewhere."""
    if components.config().access == "open":
        where.text_input("Your name (unverified: no sign-in on this server)", key=NAME_KEY)
