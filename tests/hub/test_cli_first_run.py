"""The first ten minutes, as a newcomer has them: the CLI finds the hub's database from any
folder, never makes a second one unasked, `serve` says what will not work and where to go
next, `--version`, and an image rate without token rates."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from hub.cli import main
from tests.hub.test_cli import ALICE, Cli, clean_env, write_config
from tests.hub.test_store import _drop_everything

__all__ = ["clean_env"]  # the autouse fixture: no AIGNE_HUB_* from the real environment


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _clean_environment() -> dict[str, str]:
    """This environment without the hub's settings or any provider key, so the test's
    configuration alone decides."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AIGNE_HUB_")
        and not name.endswith("_API_KEY")
        and name != "GOOGLE_API_KEY"
    }


class Served:
    """`aigne-hub serve` in a process of its own, and every line it has logged."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def close(self) -> None:
        """After the process has ended: the rest of its output read, the pipe closed."""
        self._reader.join(timeout=5)
        assert self.process.stdout is not None
        self.process.stdout.close()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.log:
            assert self.process.poll() is None, f"serve exited:\n{self.log}"
            assert time.monotonic() < deadline, f"no {text!r} in {seconds} s:\n{self.log}"
            time.sleep(0.05)


@contextmanager
def serving(config: str, cwd: Path) -> Iterator[Served]:
    """`aigne-hub serve --config <config>` run from `cwd`, once it listens; stopped at the
    end, whatever happens."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--config", config, "--port", str(port)],
        cwd=cwd,
        env=_clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    served = Served(process, port)
    try:
        served.wait_for("Uvicorn running on")
        yield served
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        served.close()


def _hub_folder(tmp_path: Path, providers: str = "") -> Path:
    """A configuration in a folder of its own, naming its database by a relative path, as
    a newcomer writes it."""
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "hub.toml").write_text(f'[database]\nurl = "sqlite:///hub.db"\n{providers}')
    return folder


# -- one database, wherever a command runs --------------------------------------------------


def test_a_key_made_from_another_folder_works_against_the_running_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _hub_folder(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The hub is started from the folder above its configuration; the key is made from
    # yet another one, with the configuration named by a relative path of its own.
    with serving("hub/hub.toml", cwd=tmp_path) as hub:
        monkeypatch.chdir(elsewhere)
        code = main(["keys", "create", "--user", ALICE, "--config", "../hub/hub.toml", "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        key = json.loads(out)["key"]
        answer = httpx.get(
            f"{hub.url}/api/user/balance", headers={"authorization": f"Bearer {key}"}
        )

    assert answer.status_code == 200, answer.text
    assert (folder / "hub.db").exists()
    assert not (tmp_path / "hub.db").exists() and not (elsewhere / "hub.db").exists()


def test_serve_makes_its_database_and_says_so(tmp_path: Path) -> None:
    folder = _hub_folder(tmp_path)

    with serving(str(folder / "hub.toml"), cwd=tmp_path) as hub:
        log = hub.log

    assert (folder / "hub.db").exists()
    assert f"no database at {folder / 'hub.db'} yet: making it" in log


@pytest.mark.parametrize("command", [["keys", "create", "--user", ALICE], ["db", "upgrade"]])
def test_a_command_with_no_database_refuses_without_create_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    config = str(_hub_folder(tmp_path) / "hub.toml")
    database = tmp_path / "hub" / "hub.db"

    refused = main([*command, "--config", config])
    out, err = capsys.readouterr()

    assert refused == 1 and out == ""
    assert f"there is no database at {database}" in err
    assert f"the database of {config}" in err
    assert "`aigne-hub serve` makes it" in err and "--create" in err
    assert not database.exists()

    assert main([*command, "--config", config, "--create"]) == 0
    assert database.exists()


def test_a_command_without_any_configuration_refuses_to_make_a_database_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `clean_env` has moved into an empty tmp_path, with no AIGNE_HUB_CONFIG.
    refused = main(["keys", "create", "--user", ALICE])

    err = capsys.readouterr().err
    assert refused == 1
    assert f"there is no database at {tmp_path / 'aigne-hub.db'}" in err
    assert "no configuration was given by --config or AIGNE_HUB_CONFIG" in err
    assert not (tmp_path / "aigne-hub.db").exists()


def test_a_database_without_the_hubs_tables_is_refused_too(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_drop_everything(db_url))  # PostgreSQL: a database that exists, empty
    if db_url.startswith("sqlite"):
        (tmp_path / "hub.db").touch()  # SQLite: an empty file
    config = write_config(tmp_path, db_url)

    refused = main(["credits", "grant", ALICE, "5", "--config", config])
    err = capsys.readouterr().err
    created = main(["credits", "grant", ALICE, "5", "--config", config, "--create", "--json"])

    assert refused == 1 and "has no hub tables" in err and "--create" in err
    assert created == 0 and json.loads(capsys.readouterr().out)["balance"] == "5"


# -- what serve says at start ---------------------------------------------------------------


def test_serve_warns_of_each_provider_without_a_key_and_says_where_to_go_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _hub_folder(
        tmp_path,
        '[providers.keyed]\nbase_url = "http://127.0.0.1:9/v1"\napi_keys = ["sk-keyed-0001"]\n'
        '[providers.stored]\nbase_url = "http://127.0.0.1:9/v1"\nmodels = ["m-1"]\n'
        '[providers.keyless]\nbase_url = "http://127.0.0.1:9/v1"\n',
    )
    config = str(folder / "hub.toml")
    # A key kept in the database counts as much as one in the configuration.
    add = ["credentials", "add", "stored", "--key", "sk-stored-0002", "--config", config]
    assert main([*add, "--create"]) == 0
    capsys.readouterr()

    with serving(config, cwd=tmp_path) as hub:
        hub.wait_for("Dashboard:")
        log, url = hub.log, hub.url

    assert "provider 'keyless' has no API key" in log
    assert "KEYLESS_API_KEY" in log and "aigne-hub credentials add keyless" in log
    assert "provider 'keyed'" not in log and "provider 'stored'" not in log
    assert "no provider is configured" not in log
    # Where to go next: the same configuration for the CLI, a key, a rate, the dashboard.
    assert f"export AIGNE_HUB_CONFIG={config}" in log
    assert "aigne-hub keys create --user" in log
    assert "aigne-hub rates set stored/m-1 --input" in log
    assert f"Dashboard: {url}/dashboard" in log
    assert "sk-keyed-0001" not in log and "sk-stored-0002" not in log


def test_serve_warns_when_no_provider_is_configured(tmp_path: Path) -> None:
    folder = _hub_folder(tmp_path)

    with serving(str(folder / "hub.toml"), cwd=tmp_path) as hub:
        hub.wait_for("Dashboard:")
        log = hub.log

    assert "no provider is configured, so every model call will be refused" in log
    assert "has no API key" not in log


def test_the_dashboard_address_printed_is_the_public_one(tmp_path: Path) -> None:
    folder = _hub_folder(tmp_path, '[server]\npublic_url = "https://hub.example/ai/"\n')

    with serving(str(folder / "hub.toml"), cwd=tmp_path) as hub:
        hub.wait_for("Dashboard:")
        log = hub.log

    assert "Dashboard: https://hub.example/ai/dashboard" in log


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_port_in_use_says_so_before_it_announces_anything(
    tmp_path: Path, workers: str
) -> None:
    folder = _hub_folder(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "hub.cli", "serve", "--config", str(folder / "hub.toml")]
            + ["--host", "127.0.0.1", "--port", str(port), "--workers", workers],
            cwd=tmp_path,
            env=_clean_environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert "address already in use" in said.lower()
    assert "AIGNE Hub ready" not in said and "Dashboard:" not in said


# -- small things a newcomer reaches for ----------------------------------------------------


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"aigne-hub {version('aigne-hub')}"


def test_an_image_rate_needs_only_its_price_per_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}"), capsys)

    set_rate = cli.json("rates", "set", "openai/dall-e-3", "--image", "0.04")
    [rate] = cli.json("rates", "list")

    assert set_rate["type"] == rate["type"] == "imageGeneration"
    assert (rate["image_rate"], rate["input_rate"], rate["output_rate"]) == ("0.04", "0", "0")


def test_output_cut_short_by_its_reader_is_no_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}")
    command = [sys.executable, "-m", "hub.cli", "rates", "list", "--config", config, "--create"]
    read, write = os.pipe()
    os.close(read)  # `| head` that has read what it wanted: every write now fails
    try:
        done = subprocess.run(
            command, stdout=write, stderr=subprocess.PIPE, text=True, env=_clean_environment()
        )
    finally:
        os.close(write)

    assert "BrokenPipe" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stderr == ""
