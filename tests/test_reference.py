"""Reference parsing and normalisation, Docker's rules, and errors that name the bad part."""

from __future__ import annotations

import pytest

from ocimirror.errors import InvalidReference
from ocimirror.remotes.reference import Reference, parse_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "normalised"),
    [
        ("alpine", "docker.io", "library/alpine", "latest", None, "docker.io/library/alpine:latest"),
        ("alpine:3.20", "docker.io", "library/alpine", "3.20", None, "docker.io/library/alpine:3.20"),
        ("user/app", "docker.io", "user/app", "latest", None, "docker.io/user/app:latest"),
        ("docker.io/alpine", "docker.io", "library/alpine", "latest", None, "docker.io/library/alpine:latest"),
        ("index.docker.io/library/alpine:3", "docker.io", "library/alpine", "3", None, "docker.io/library/alpine:3"),
        ("registry-1.docker.io/x/y:z", "docker.io", "x/y", "z", None, "docker.io/x/y:z"),
        ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest"),
        ("localhost:5000/x", "localhost:5000", "x", "latest", None, "localhost:5000/x:latest"),
        ("127.0.0.1:5000/a/b/c:v1", "127.0.0.1:5000", "a/b/c", "v1", None, "127.0.0.1:5000/a/b/c:v1"),
        ("ghcr.io/org/app:v1.2_3-rc", "ghcr.io", "org/app", "v1.2_3-rc", None, "ghcr.io/org/app:v1.2_3-rc"),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None, "[::1]:5000/app:latest"),
        (f"alpine@{DIGEST}", "docker.io", "library/alpine", None, DIGEST, f"docker.io/library/alpine@{DIGEST}"),
        (
            f"quay.io/a/b:1@{DIGEST}",
            "quay.io",
            "a/b",
            "1",
            DIGEST,
            f"quay.io/a/b:1@{DIGEST}",
        ),
        (
            "my-registry.example:443/a__b/c.d/e-f",
            "my-registry.example:443",
            "a__b/c.d/e-f",
            "latest",
            None,
            "my-registry.example:443/a__b/c.d/e-f:latest",
        ),
    ],
)
def test_parse_and_normalise(text, registry, repository, tag, digest, normalised) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert str(ref) == normalised
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "named_part"),
    [
        ("", "empty"),
        ("Alpine", "'Alpine' (must be lowercase)"),
        ("docker.io/Library/alpine", "bad repository component 'Library'"),
        ("a//b", "bad repository component ''"),
        ("a/b/", "bad repository component ''"),
        ("a/-b", "bad repository component '-b'"),
        ("a/b_", "bad repository component 'b_'"),
        ("alpine:", "bad tag ''"),
        ("alpine:-x", "bad tag '-x'"),
        ("alpine:" + "t" * 129, "bad tag"),
        ("alpine:v\u0661\u00e9", "bad tag"),  # distribution's \w is ASCII: no Arabic-Indic digits or accents
        ("alpine@sha256:abc", "bad digest"),
        ("alpine@md5:" + "a" * 32, "unsupported algorithm"),
        ("alpine@", "bad digest"),
        ("bad_host.example/app", "bad registry host 'bad_host.example'"),
        ("host.example:99999999/app", "bad registry host"),
        ("localhost:5000/", "repository is missing"),
        (":tag", "repository is missing"),
        ("with space", "whitespace"),
        ("a/" + "b" * 300, "longer than 255"),
    ],
)
def test_invalid_references_name_the_bad_part(text: str, named_part: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_reference(text)
    assert named_part in str(caught.value)


def test_api_host_of_docker_hub() -> None:
    assert parse_reference("alpine").api_host == "registry-1.docker.io"
    assert parse_reference("ghcr.io/a/b").api_host == "ghcr.io"


def test_with_tag_and_with_digest() -> None:
    ref = parse_reference(f"ghcr.io/a/b:1@{DIGEST}")
    retagged = ref.with_tag("2")
    assert str(retagged) == "ghcr.io/a/b:2" and retagged.object == "2"
    pinned = parse_reference("ghcr.io/a/b:1").with_digest(DIGEST)
    assert str(pinned) == f"ghcr.io/a/b:1@{DIGEST}" and pinned.object == DIGEST
    with pytest.raises(InvalidReference, match="bad tag"):
        ref.with_tag("no/slash")
    with pytest.raises(InvalidReference, match="bad digest"):
        ref.with_digest("sha256:short")


def test_reference_is_hashable_and_frozen() -> None:
    ref = parse_reference("alpine")
    assert {ref: 1}[Reference("docker.io", "library/alpine", "latest")] == 1
    with pytest.raises(AttributeError):
        ref.tag = "x"  # type: ignore[misc]
