"""Node.js clients under test (the AIGNE SDK, Claude Code, Codex, the official JS SDKs):
their pinned packages installed once a session, and the environment they run in."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

NPM_INSTALL_TIMEOUT = 600
# Proxy settings of the machine must not send the clients' loopback calls elsewhere.
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def client_env(*, drop_prefixes: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """This process's environment without proxies (and without variables starting with
    `drop_prefixes`, the caller's own settings of the client under test), plus `extra`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in PROXY_VARS and not name.startswith(drop_prefixes or ("\0",))
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def installed(
    factory: pytest.TempPathFactory, source: Path, files: tuple[str, ...], what: str
) -> Path:
    """`files` of `source` (a package.json, its lock, the scripts) copied to a temporary
    folder and installed there: `npm ci` (exactly the locked versions) when a lock is
    among them. Skipped without node or npm, unless CI is set: then it must run."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = "node" if node is None else "npm"
        if os.environ.get("CI"):
            pytest.fail(f"`{missing}` is not on PATH and CI is set: the {what} tests must run")
        pytest.skip(f"`{missing}` is not on PATH")
    folder = factory.mktemp(source.name)
    for name in files:
        shutil.copy(source / name, folder / name)
    command = "ci" if "package-lock.json" in files else "install"
    started = time.monotonic()
    try:
        done = subprocess.run(
            [npm, command, "--no-audit", "--no-fund"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=NPM_INSTALL_TIMEOUT,
            env=client_env(),
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"npm {command} took more than {NPM_INSTALL_TIMEOUT} s")
    if done.returncode != 0:
        pytest.fail(f"npm {command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    print(f"npm {command} of {what} took {time.monotonic() - started:.1f} s")
    return folder
