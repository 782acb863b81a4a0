"""Start the Streamlit dashboard: loopback by default; beyond it only with sign-in (OIDC).

Access modes, passed to the app as ``--access``:

- ``loopback``: only this machine can connect; a reviewer is the local user.
- ``oidc``: served beyond loopback; every page needs Streamlit's OIDC sign-in (``st.login``,
  configured in ``.streamlit/secrets.toml``) and a reviewer is the signed-in identity.
- ``open``: served beyond loopback with ``--no-auth``: every page warns, and marks are
  recorded as unverified names.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
LOOPBACK = "127.0.0.1"
# Host names a browser on this machine uses. The websocket refuses any other Host header,
# which closes the DNS-rebinding door (a foreign page whose name resolves to 127.0.0.1).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# Streamlit options: loopback only, and nothing that reaches outside this machine.
SERVER_OPTIONS = {
    "server.headless": "true",
    "server.maxUploadSize": "20",  # MB, the limit the upload page states
    "browser.gatherUsageStats": "false",
    "global.developmentMode": "false",
    "client.toolbarMode": "viewer",  # no "Deploy" button
    "client.showErrorDetails": "none",  # pages show their own messages, never tracebacks
}


ACCESS_MODES = ("loopback", "oidc", "open")
# Where Streamlit reads secrets (its own search order), and what its OIDC sign-in needs.
SECRETS_FILES = (Path(".streamlit") / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml")
AUTH_KEYS = ("redirect_uri", "cookie_secret")
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")


def auth_problem(secrets_files: Sequence[Path] = SECRETS_FILES) -> str | None:
    """Why Streamlit's OIDC sign-in is not usable here, or None when it is configured."""
    import tomllib

    found = [f for f in secrets_files if f.is_file()]
    if not found:
        return f"no {SECRETS_FILES[0]} with an [auth] section"
    try:
        auth = tomllib.loads(found[0].read_text()).get("auth")
    except (OSError, ValueError) as exc:
        return f"{found[0]} cannot be read ({exc})"
    if not isinstance(auth, dict):
        return f"{found[0]} has no [auth] section"
    providers = [v for v in auth.values() if isinstance(v, dict)]
    missing = [k for k in AUTH_KEYS if not auth.get(k)]
    if not all(auth.get(k) for k in PROVIDER_KEYS) and not any(
        all(p.get(k) for k in PROVIDER_KEYS) for p in providers
    ):
        missing += list(PROVIDER_KEYS)
    if missing:
        return f"{found[0]} [auth] lacks {missing}"
    try:
        import authlib  # noqa: F401  Streamlit's st.login needs it
    except ImportError:
        return "the Authlib package is not installed (pip install 'Authlib>=1.3.2')"
    return None


def access_mode(address: str, no_auth: bool, secrets_files: Sequence[Path] = SECRETS_FILES) -> str:
    """The access mode for ``address``; beyond loopback without sign-in is refused unless
    ``no_auth`` (a ValueError saying what to configure)."""
    if address == LOOPBACK:
        return "loopback"
    problem = auth_problem(secrets_files)
    if problem is None:
        return "oidc"
    if no_auth:
        return "open"
    raise ValueError(
        f"--address {address} serves the dashboard beyond this machine, which needs sign-in: "
        f"{problem}. Configure Streamlit's OIDC login (README: exposing the dashboard), or "
        "pass --no-auth to serve it without (every page then warns; reviews are unverified)"
    )


def streamlit_command(
    run: Path | None,
    runs_root: Path,
    port: int,
    address: str = LOOPBACK,
    allowed_hosts: Sequence[str] = (),
    access: str = "loopback",
) -> list[str]:
    """The ``streamlit run`` command line: bound to ``address`` (a set address also skips
    Streamlit's outside IP lookup), serving only loopback names plus ``allowed_hosts``."""
    # dashboard.launch: Streamlit's own command line, after the pages' heavy imports
    cmd = [sys.executable, "-m", "dashboard.launch", "run", str(APP), "--server.port", str(port)]
    cmd += ["--server.address", address, "--browser.serverAddress", address]
    for host in dict.fromkeys([*LOOPBACK_HOSTS, *allowed_hosts]):
        cmd += ["--server.allowedHosts", host]
    for key, value in SERVER_OPTIONS.items():
        cmd += [f"--{key}", value]
    cmd += ["--", "--runs-root", str(runs_root), "--access", access]
    if run is not None:
        cmd += ["--run", str(run)]
    return cmd


def check_exposure(address: str, allowed_hosts: Sequence[str]) -> None:
    """Serving beyond loopback is deliberate: the host names browsers use must be named."""
    if address != LOOPBACK and not allowed_hosts:
        raise ValueError(
            f"--address {address} exposes the dashboard beyond this machine: name the host "
            "names browsers will use with --allow-host (e.g. --allow-host myserver.lan)"
        )


def serve_dashboard(
    run: Path | None,
    runs_root: Path,
    port: int,
    address: str = LOOPBACK,
    allowed_hosts: Sequence[str] = (),
    no_auth: bool = False,
) -> int:
    """Replace this process with the Streamlit server, so signals reach it directly."""
    if not APP.is_file():
        raise FileNotFoundError(f"dashboard app not found at {APP}")
    check_exposure(address, allowed_hosts)
    access = access_mode(address, no_auth)
    if access == "open":
        print("WARNING: served beyond this machine WITHOUT sign-in (--no-auth)", flush=True)
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    shown = LOOPBACK if address == LOOPBACK else (allowed_hosts[0] if allowed_hosts else address)
    print(f"NERO Explorer on http://{shown}:{port}  (Ctrl+C stops it)", flush=True)
    cmd = streamlit_command(run, runs_root, port, address, allowed_hosts, access)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached
