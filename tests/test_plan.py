"""Tag selection and config validation for mirror syncs."""

from __future__ import annotations

import pytest

from ocimirror.config import ImageSpec, load_config, parse_config
from ocimirror.errors import ConfigError
from ocimirror.plan import select_tags

TAGS = ["3.18", "3.19", "3.20", "3.21.0rc1", "edge", "latest", "3.20-slim", "v4.0", "2.9"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, ["latest"]),
        ({"tags": ["edge", "3.20"]}, ["3.20", "edge"]),
        ({"include": [r"3\.\d+"]}, ["3.18", "3.19", "3.20"]),
        ({"include": [r"3\..*"], "exclude": [r".*-slim", r".*rc.*"]}, ["3.18", "3.19", "3.20"]),
        ({"semver": ">=3.19,<4"}, ["3.19", "3.20"]),
        ({"semver": ">=3.19 <4"}, ["3.19", "3.20"]),
        ({"semver": ">=3.21.0rc1"}, ["3.21.0rc1", "v4.0"]),
        ({"latest": 2}, ["3.20", "v4.0"]),
        ({"latest": 2, "semver": "<4"}, ["3.19", "3.20"]),
        ({"latest": 1, "tags": ["edge"]}, ["edge", "v4.0"]),
        ({"digests": ["sha256:" + "a" * 64]}, []),
    ],
)
def test_select_tags(spec: dict, expected: list[str]) -> None:
    assert select_tags(ImageSpec(source="alpine", **spec), TAGS) == expected


def test_config_errors_name_every_bad_place(tmp_path) -> None:
    path = tmp_path / "mirror.yaml"
    path.write_text(
        "store: {url: /tmp/x}\n"
        "platforms: [linux/]\n"
        "images:\n"
        "  - source: alpine\n"
        "    latest: 0\n"
        "    digests: ['sha256:../../etc']\n"
        "registries:\n"
        "  docker.io: {credentials: {username: bob}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    for where in ("platforms", "images.0.latest", "images.0.digests.0", "registries.docker.io.credentials"):
        assert where in message


def test_config_refuses_unreadable_and_non_mapping(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("store: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["a list"])


def test_secrets_are_references_not_values() -> None:
    config = parse_config(
        {
            "store": {"url": "s3://b/m", "secret_options": {"secret": {"env": "AWS_SECRET_ACCESS_KEY"}}},
            "registries": {"ghcr.io": {"credentials": {"username": "bot", "password": {"secret_block": "ghcr"}}}},
            "images": [{"source": "ghcr.io/org/app", "tags": ["1.0"]}],
        }
    )
    assert config.registries["ghcr.io"].credentials.password.secret_block == "ghcr"
    with pytest.raises(ConfigError, match="exactly one"):
        parse_config({"store": {"url": "x", "secret_options": {"k": {}}}, "images": [{"source": "a"}]})


def test_bad_mirrors_are_refused_with_the_config_without_echoing_credentials() -> None:
    """A mirror URL is checked when the config is read, not first inside a task run, and a password
    wrongly written into one is never repeated in the error (which reaches logs and the UI)."""
    with pytest.raises(ConfigError) as refused:
        parse_config(
            {
                "store": {"url": "/tmp/x"},
                "registries": {"docker.io": {"mirrors": ["https://bob:hunter2@mirror.example"]}},
                "images": [{"source": "alpine"}],
            }
        )
    message = str(refused.value)
    assert "registries.docker.io.mirrors" in message and "without credentials" in message
    assert "hunter2" not in message
    with pytest.raises(ConfigError, match="scheme must be http or https"):
        parse_config(
            {"store": {"url": "/tmp/x"}, "registries": {"q.io": {"mirrors": ["ftp://m"]}}, "images": [{"source": "a"}]}
        )


def test_published_json_schema_is_current() -> None:
    import json
    from pathlib import Path

    from ocimirror.config import MirrorConfig

    published = Path(__file__).parent.parent / "deployments" / "mirror-config.schema.json"
    assert json.loads(published.read_text()) == MirrorConfig.model_json_schema(), (
        "regenerate with: python -m ocimirror_cli schema > deployments/mirror-config.schema.json"
    )


def test_sample_configs_are_valid() -> None:
    from pathlib import Path

    samples = sorted((Path(__file__).parent.parent / "deployments" / "configs").glob("*.yaml"))
    assert samples
    for sample in samples:
        load_config(sample)


def test_a_store_url_with_credentials_is_refused_without_repeating_them() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"store": {"url": "s3://AKIDEXAMPLE:wJalrXUtnFEMI@bucket/oci"}, "images": [{"source": "a"}]})
    assert "store.url" in str(caught.value) and "credentials" in str(caught.value)
    assert "wJalrXUtnFEMI" not in str(caught.value)
