"""Start the Streamlit dashboard bound to the loopback interface."""

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


def streamlit_command(
    run: Path | None,
    runs_root: Path,
    port: int,
    address: str = LOOPBACK,
    allowed_hosts: Sequence[str] = (),
) -> list[str]:
    """The ``streamlit run`` command line: bound to ``address`` (a set address also skips
    Streamlit's outside IP lookup), serving only loopback names plus ``allowed_hosts``."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port)]
    cmd += ["--server.address", address, "--browser.serverAddress", address]
    for host in dict.fromkeys([*LOOPBACK_HOSTS, *allowed_hosts]):
        cmd += ["--server.allowedHosts", host]
    for key, value in SERVER_OPTIONS.items():
        cmd += [f"--{key}", value]
    cmd += ["--", "--runs-root", str(runs_root)]
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
) -> int:
    """Replace this process with the Streamlit server, so signals reach it directly."""
    if not APP.is_file():
        raise FileNotFoundError(f"dashboard app not found at {APP}")
    check_exposure(address, allowed_hosts)
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    shown = LOOPBACK if address == LOOPBACK else (allowed_hosts[0] if allowed_hosts else address)
    print(f"NERO Explorer on http://{shown}:{port}  (Ctrl+C stops it)", flush=True)
    cmd = streamlit_command(run, runs_root, port, address, allowed_hosts)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached
