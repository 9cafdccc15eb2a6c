"""Hostile configs: each refused at load time with one line and exit 2, or made harmless (a catastrophic
tag pattern is matched in linear time by RE2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ocimirror import mediatypes as mt
from ocimirror.config import MAX_CONFIG_BYTES, MAX_IMAGES, ImageSpec, load_config
from ocimirror.descriptor import Descriptor
from ocimirror.errors import ConfigError
from ocimirror.plan import select_tags
from ocimirror_cli.main import app
from tests.fixtures.scripted_registry import Answer

#: The longest tag distribution allows, ending so that ``(a+)+$`` backtracks through every split of it.
LONG_TAG = "a" * 127 + "-"


def _sync(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocimirror_cli", "sync", str(config), *args], capture_output=True, text=True, timeout=120
    )


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mirror.yaml"
    path.write_text(text)
    return path


def test_a_catastrophic_pattern_is_matched_in_linear_time() -> None:
    spec = ImageSpec(source="example.com/evil/long", include=["(a+)+$"], exclude=["(x+x+)+y"])
    assert select_tags(spec, [LONG_TAG, "aaa", "x" * 127]) == ["aaa"]


def test_sync_dry_run_with_a_catastrophic_pattern_and_long_tags(scripted_registry, prefect_server, tmp_path) -> None:
    manifest = b'{"schemaVersion": 2}'
    digest = Descriptor.from_bytes(mt.OCI_MANIFEST, manifest).digest
    tags = {"name": "evil/long", "tags": [LONG_TAG, *(f"{'a' * n}-" for n in range(20, 127)), "aaa"]}
    scripted_registry.answers["/v2/evil/long/tags/list"] = Answer(200, json.dumps(tags).encode())
    headers = {"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": digest}
    scripted_registry.answers["/v2/evil/long/manifests/aaa"] = Answer(200, manifest, headers)
    config = _config(
        tmp_path,
        f"store: {{url: {tmp_path / 'store'}}}\nimages:\n  - source: {scripted_registry.host}/evil/long\n"
        "    include: ['(a+)+$']\n",
    )

    result = CliRunner().invoke(app, ["sync", str(config), "--dry-run", "--json"])

    assert result.exit_code == 0, result.output
    planned = json.loads(result.stdout)["images"]
    assert [(image["reference"], image["status"]) for image in planned] == [
        (f"{scripted_registry.host}/evil/long:aaa", "planned")
    ]


@pytest.mark.parametrize("pattern", ["(a)\\1", "v(?=1)", "(?<!x)y"])
def test_a_pattern_re2_cannot_run_is_refused_naming_it(pattern: str, tmp_path: Path) -> None:
    config = _config(
        tmp_path, f"store: {{url: /tmp/x}}\nimages:\n  - source: alpine\n    include: [{json.dumps(pattern)}]\n"
    )
    with pytest.raises(ConfigError, match=r"images\.0\.include: invalid regular expression") as caught:
        load_config(config)
    assert repr(pattern) in str(caught.value) and "\n" not in str(caught.value)


BILLION_LAUGHS = """\
store:
  url: /tmp/store
  options:
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
images: [{source: alpine}]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BILLION_LAUGHS, "YAML aliases expand to"),
        ("store: &s {url: /tmp/x, options: {self: *s}}\nimages: [{source: alpine}]\n", "(a cycle)"),
        ("store: {url: /tmp/x}\nimages: [{source: alpine}]\nx: " + "[" * 50_000 + "]" * 50_000, "nests too deeply"),
        ("store: {url: /tmp/x}\nimages:\n" + "  - source: alpine\n" * (MAX_IMAGES + 1), f"at most {MAX_IMAGES}"),
        ("store: {url: /tmp/x}\nimages: [{source: alpine}]\n#" + "x" * MAX_CONFIG_BYTES, "byte limit for a config"),
        (
            "store: {url: 's3://AKIAEXAMPLE:hunter2-secret@bucket/mirror'}\nimages: [{source: alpine}]\n",
            "store.url: the store URL must not contain credentials; use secret_options",
        ),
    ],
    ids=["billion-laughs", "alias-cycle", "deep-nesting", "too-many-images", "too-large", "url-credentials"],
)
def test_a_hostile_config_is_one_line_exit_2(text: str, message: str, tmp_path: Path) -> None:
    result = _sync(_config(tmp_path, text), "--dry-run")

    assert result.returncode == 2, result
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_aliases_that_reuse_a_block_are_still_fine(tmp_path: Path) -> None:
    config = load_config(
        _config(
            tmp_path,
            "registries:\n"
            "  a.example.com: &auth {credentials: {username: bot, password: {env: TOKEN}}}\n"
            "  b.example.com: *auth\n"
            "store: {url: /tmp/x}\n"
            "images: [{source: a.example.com/x, tags: [v1]}, {source: b.example.com/y, tags: [v1]}]\n",
        )
    )
    assert config.registries["a.example.com"] == config.registries["b.example.com"]
