"""References against distribution/reference's own test tables (``tests/peers/distribution_reference.yaml``).

ocimirror parses every reference the way ``ParseNormalizedNamed`` does (``alpine`` ->
``docker.io/library/alpine``) and adds the ``latest`` tag when neither tag nor digest is given, as
``ParseDockerRef`` does. Tables of the peer's other entry points are checked through that one parser: an
accepted name of the peer's non-normalising ``Parse`` must come out as itself, or under ``docker.io/`` or
``docker.io/library/`` (normalisation only ever prefixes).
"""

from __future__ import annotations

from typing import Any

import pytest

from ocimirror.errors import InvalidReference
from ocimirror.remotes.reference import Reference, parse_reference
from tests.fixtures.peer_tables import rows

PEER = "distribution_reference"


def _parse(text: str) -> Reference | None:
    try:
        return parse_reference(text)
    except InvalidReference:
        return None


def _string(ref: Reference | None) -> str:
    return "refused" if ref is None else str(ref)


def _default_tag(tag: str | None, digest: str | None) -> str | None:
    return tag if tag is not None or digest is not None else "latest"


@pytest.mark.parametrize("row", rows(PEER, "TestReferenceParse"))
def test_parse(row: dict[str, Any]) -> None:
    ref = _parse(row["input"])
    if "difference" in row:
        assert _string(ref) == row["ocimirror"]
        return
    if "error" in row:
        assert ref is None, f"peer refuses with {row['error']}, ocimirror parsed {ref}"
        return
    assert ref is not None
    name = row["name"]
    assert ref.name in {name, f"docker.io/{name}", f"docker.io/library/{name}"}
    assert (ref.tag, ref.digest) == (_default_tag(row.get("tag"), row.get("digest")), row.get("digest"))


@pytest.mark.parametrize("row", rows(PEER, "TestParseNamed"))
def test_parse_named_accepts_only_canonical_names(row: dict[str, Any]) -> None:
    ref = parse_reference(row["input"])
    canonical = ref.name == row["input"]
    assert canonical is ("error" not in row)
    if canonical:
        assert (ref.registry, ref.repository) == (row["domain"], row["path"])


@pytest.mark.parametrize("row", rows(PEER, "TestWithTag") + rows(PEER, "TestWithDigest"))
def test_with_tag_and_digest(row: dict[str, Any]) -> None:
    combined = _parse(row["combined"])
    if "difference" in row:
        assert _string(combined) == row["ocimirror"]
        return
    ref = parse_reference(row["name"])
    if "digest" in row:
        ref = ref.with_digest(row["digest"])
    if "tag" in row:
        ref = ref.with_tag(row["tag"])
    assert ref == combined


@pytest.mark.parametrize("row", rows(PEER, "TestValidateReferenceName") + rows(PEER, "TestValidateRemoteName"))
def test_validate_names(row: dict[str, Any]) -> None:
    assert (_parse(row["input"]) is not None) is row["valid"]


@pytest.mark.parametrize("row", rows(PEER, "TestParseRepositoryInfo"))
def test_repository_info(row: dict[str, Any]) -> None:
    for text in filter(None, [row["familiar"], row["full"], row["ambiguous"]]):
        ref = parse_reference(text)
        assert (ref.name, ref.registry, ref.repository) == (row["full"], row["domain"], row["remote"])


@pytest.mark.parametrize(
    "row",
    rows(PEER, "TestParseReferenceWithTagAndDigest")
    + rows(PEER, "TestParseAnyReference")
    + rows(PEER, "TestParseDockerRef"),
)
def test_normalised_strings(row: dict[str, Any]) -> None:
    ref = _parse(row["input"])
    if "difference" in row:
        assert _string(ref) == row["ocimirror"]
        return
    # The peer leaves a reference without tag or digest untagged; ocimirror adds "latest" (ParseDockerRef).
    assert _string(ref) in {row["expected"], f"{row['expected']}:latest"}


@pytest.mark.parametrize("row", rows(PEER, "TestNormalizedSplitHostname"))
def test_split_hostname(row: dict[str, Any]) -> None:
    ref = parse_reference(row["input"])
    assert (ref.registry, ref.repository) == (row["domain"], row["path"])


@pytest.mark.parametrize("row", rows(PEER, "TestDomainRegexp"))
def test_domain_expression(row: dict[str, Any]) -> None:
    ref = _parse(f"{row['input']}/name")
    if "difference" in row or "regexp_only" in row:
        assert _string(ref) == row["ocimirror"]
        return
    assert (ref is not None) is row["match"]


@pytest.mark.parametrize("row", rows(PEER, "TestFullNameRegexp") + rows(PEER, "TestReferenceRegexp"))
def test_name_and_reference_expressions(row: dict[str, Any]) -> None:
    ref = _parse(row["input"])
    if "difference" in row or "regexp_only" in row:
        assert _string(ref) == row["ocimirror"]
        return
    assert (ref is not None) is row["match"]


@pytest.mark.parametrize("row", rows(PEER, "TestIdentifierRegexp"))
def test_image_ids_are_refused(row: dict[str, Any]) -> None:
    try:
        parse_reference(row["input"])
        refused_as_image_id = False
    except InvalidReference as error:
        refused_as_image_id = "image ID" in str(error)
    assert refused_as_image_id is row["match"]
