"""Text from outside never reaches the terminal with control characters: a registry's error message, a
reference planted in a shared store's index.json, anything logged."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ocimirror import mediatypes as mt
from ocimirror.descriptor import Descriptor
from ocimirror.store import open_store
from ocimirror.text import printable
from ocimirror_cli.main import app
from tests.fixtures.scripted_registry import Answer, error_answer

HOSTILE = "clear\x1b[2Jscreen\x1b]0;title\x07 bell\x07 csi\x9b31m bidi\u202e nul\x00 line\nbreak"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\x1b[2Jb", "ab"),
        ("x\x1b]0;title\x07y", "xy"),
        ("link\x1b]8;;http://e.example\x1b\\text\x1b]8;;\x1b\\", "linktext"),
        ("x\x1b]0;never terminated", "x0;never terminated"),
        ("c1\x9b31mred\x9d0;t\x9c", "c1red"),
        ("tab\there\r\nnext", "tab here next"),
        ("bidi\u202eevil\u2066", "bidievil"),
        ("ünïcode ✓ stays", "ünïcode ✓ stays"),
    ],
)
def test_printable(text: str, expected: str) -> None:
    assert printable(text) == expected


def _no_controls(text: str) -> None:
    assert not any((ord(char) < 0x20 and char not in "\t\n") or 0x7F <= ord(char) <= 0x9F for char in text), repr(text)
    assert "\u202e" not in text


def test_a_registry_error_message_reaches_stderr_without_escapes(scripted_registry, prefect_server, tmp_path) -> None:
    """The manifest is served; its config blob answers 404 with a distribution error whose message is hostile
    (a HEAD has no body to quote, so the 404 is on a GET)."""
    config = Descriptor.from_bytes(mt.OCI_CONFIG, b"{}")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config.to_json(), "layers": []})
    headers = {"Content-Type": mt.OCI_MANIFEST}
    for tag in ("v1", Descriptor.from_bytes(mt.OCI_MANIFEST, manifest.encode()).digest):
        scripted_registry.answers[f"/v2/evil/esc/manifests/{tag}"] = Answer(200, manifest.encode(), headers)
    scripted_registry.answers[f"/v2/evil/esc/blobs/{config.digest}"] = error_answer(404, "BLOB_UNKNOWN", HOSTILE)
    reference = f"{scripted_registry.host}/evil/esc:v1"

    result = CliRunner().invoke(app, ["pull", reference, "--to", str(tmp_path / "store")])

    assert result.exit_code == 1
    assert re.search(rf"failed +{re.escape(reference)}", result.stderr) and "clearscreen" in result.stderr
    _no_controls(result.stderr + result.stdout)


def test_a_reference_planted_in_index_json_is_listed_without_escapes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    open_store(str(store))._ensure_layout()
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + "0" * 64,
        "size": 2,
        "annotations": {"org.opencontainers.image.ref.name": "docker.io/evil/x:\x1b]0;owned\x07v1\x1b[2J"},
    }
    (store / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))

    listed = subprocess.run([sys.executable, "-m", "ocimirror_cli", "ls", str(store)], capture_output=True, text=True)
    verified = subprocess.run(
        [sys.executable, "-m", "ocimirror_cli", "verify", str(store)], capture_output=True, text=True
    )

    assert listed.returncode == 0 and listed.stdout.startswith("docker.io/evil/x:v1\t"), listed
    assert verified.returncode == 1 and "missing-blob" in verified.stdout
    for output in (listed.stdout, listed.stderr, verified.stdout, verified.stderr):
        _no_controls(output)


def test_log_records_carry_printable_messages(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        logging.getLogger("ocimirror.test").warning("registry said %s", HOSTILE)
    (record,) = caplog.records
    assert record.getMessage().startswith("registry said clearscreen")
    _no_controls(record.getMessage())
