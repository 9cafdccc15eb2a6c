"""The command-line contract (README, "Command line"): outputs and exit codes, against real registries and stores."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ocimirror.digest import blob_path
from ocimirror_cli.main import app

runner = CliRunner()


#: A terminal narrower than any message, so a hard-wrapped line shows whatever the machine's own width.
NARROW = {**os.environ, "COLUMNS": "40"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command in a subprocess (for commands that start no Prefect run), output piped."""
    return subprocess.run(
        [sys.executable, "-m", "ocimirror_cli", *args], capture_output=True, text=True, timeout=120, env=NARROW
    )


@pytest.mark.parametrize("command", sorted(typer.main.get_command(app).commands))
def test_help_of_every_command_works_and_names_no_python_types(command: str) -> None:
    """Every registered command, present and future: --help exits 0 with its usage line, and the value of
    each option is named by a metavar, never by a Python type (`<bool>`, `<list[str]>`)."""
    result = cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"Usage: ocimirror {command} " in result.stdout
    assert not re.search(r"<(bool|str|int|float|list)\b|\{[A-Z]", result.stdout), result.stdout


@pytest.fixture
def pulled_store(seeded_registry, prefect_server, tmp_path) -> tuple[Path, str]:
    store = tmp_path / "store"
    reference = seeded_registry.reference("test/shared-a:v1")
    result = runner.invoke(app, ["pull", reference, "--to", str(store), "--json"])
    assert result.exit_code == 0, result.output
    return store, reference


def test_pull_json_reports_each_image(pulled_store) -> None:
    store, reference = pulled_store
    listed = cli("ls", str(store), "--json")
    assert listed.returncode == 0, listed.stderr
    (image,) = json.loads(listed.stdout)
    assert image["reference"] == reference and image["platforms"] == ["linux/amd64"]


def test_pull_of_a_missing_image_exits_1_and_still_pulls_the_rest(seeded_registry, prefect_server, tmp_path) -> None:
    store = tmp_path / "store"
    good, missing = seeded_registry.reference("test/single:v1"), seeded_registry.reference("test/single:nope")
    result = runner.invoke(app, ["pull", missing, good, "--to", str(store), "--json"])
    assert result.exit_code == 1
    images = json.loads(result.stdout)["images"]
    assert "not found" in images[0]["error"] and images[1]["reference"] == good
    assert cli("verify", str(store)).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pull", "UPPER/Case:tag", "--to", "x"], "repository"),
        (["pull", "alpine", "--to", "x", "--platform", "linux/"], "invalid platform"),
        (["pull", "alpine", "--to", "x", "--storage-option", "novalue"], "KEY=VALUE"),
        (["serve", "x", "--listen", "127.0.0.1:\u00b2"], "expected HOST:PORT"),  # '²'.isdigit() is True
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.returncode == 2, result
    assert message in result.stderr + result.stdout


def test_sync_with_a_bad_config_exits_2_naming_the_problem(tmp_path) -> None:
    config = tmp_path / "mirror.yaml"
    config.write_text("store: {url: /tmp/x}\nimages: [{source: alpine, latest: -1}]\n")
    result = cli("sync", str(config))
    assert result.returncode == 2
    assert "images.0.latest" in result.stderr


def test_sync_dry_run_then_sync(seeded_registry, prefect_server, tmp_path) -> None:
    config = tmp_path / "mirror.yaml"
    store = tmp_path / "store"
    source = seeded_registry.reference("test/dockerlist")
    config.write_text(f"store: {{url: {store}}}\nimages:\n  - source: {source}\n    tags: [v1]\n")
    planned = runner.invoke(app, ["sync", str(config), "--dry-run", "--json"])
    assert planned.exit_code == 0, planned.output
    assert [i["status"] for i in json.loads(planned.stdout)["images"]] == ["planned"]
    assert not store.exists() or not (store / "index.json").exists()
    synced = runner.invoke(app, ["sync", str(config)])
    assert synced.exit_code == 0, synced.output
    assert synced.stdout.split()[0] == "fetched"


def test_verify_catches_a_corrupted_blob(pulled_store) -> None:
    store, _ = pulled_store
    assert cli("verify", str(store)).returncode == 0
    entry = json.loads((store / "index.json").read_text())["manifests"][0]
    manifest = json.loads((store / blob_path(entry["digest"])).read_bytes())
    layer = store / blob_path(manifest["layers"][0]["digest"])
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))

    result = cli("verify", str(store), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert [fault["kind"] for fault in report["faults"]] == ["corrupt-blob"]
    assert report["faults"][0]["digest"] == manifest["layers"][0]["digest"]


@pytest.mark.parametrize("command", ["verify", "ls", "serve"])
def test_a_path_that_is_no_store_is_an_error_not_an_empty_store(command: str, tmp_path) -> None:
    """A mistyped store path must not verify as "ok" (exit 0) or list as empty."""
    result = cli(command, str(tmp_path / "typo"))
    assert result.returncode == 1
    assert "not an OCI image layout" in result.stderr and "oci-layout" in result.stderr
    assert len(result.stderr.splitlines()) == 1, "piped, a message is one line however narrow the terminal"


def test_serve_on_a_port_in_use_is_one_error_line(tmp_path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (store / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = cli("serve", str(store), "--listen", address)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()  # one message, no traceback
    assert line.startswith(f"error: cannot listen on {address}: ") and "in use" in line


def test_secret_storage_options_never_reach_the_prefect_server(seeded_registry, prefect_server, tmp_path) -> None:
    from prefect.client.orchestration import get_client

    secret = "hunter2-do-not-log-me"
    store = tmp_path / "store"
    result = runner.invoke(
        app,
        [
            "pull",
            seeded_registry.reference("test/single:v1"),
            "--to",
            str(store),
            "-o",
            f"secret={secret}",
            "--prefect",
        ],
    )
    assert result.exit_code == 0, result.output
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        artifacts = client.read_artifacts(limit=200)
    recorded = json.dumps([run.parameters for run in runs], default=str)
    recorded += json.dumps([artifact.data for artifact in artifacts], default=str)
    assert "OCIMIRROR_CLI_OPTION_SECRET" in recorded  # the reference is there...
    assert secret not in json.dumps(dict(os.environ))  # ...not set in the environment helpers inherit...
    assert secret not in recorded  # ...the value is not
