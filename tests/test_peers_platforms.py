"""Platforms against containerd/platforms' own test tables (``tests/peers/containerd_platforms.yaml``).

containerd's ``NewMatcher`` is ocimirror's ``Exact``, ``Only`` is ``only``, and ``OnlyStrict``, ``Ordered``
and ``Any`` of one platform are ``any_of([platform])``. Orders are checked with a stable sort on ``less``.
"""

from __future__ import annotations

from functools import cmp_to_key
from typing import Any

import pytest

from ocimirror.descriptor import Platform
from ocimirror.errors import InvalidPlatform
from ocimirror.platforms import (
    Exact,
    MatchComparer,
    any_of,
    format_platform,
    normalize,
    only,
    parse_platform,
    windows_host_runs,
)
from tests.fixtures.peer_tables import rows

PEER = "containerd_platforms"
#: ocimirror's stand-ins for the host the peer's tests run on.
HOST = {"$GOOS": "linux", "$GOARCH": "amd64"}
#: Windows hosts the peer's host-dependent rows are run for: ltsc2019, ltsc2022, ltsc2025.
WINDOWS_HOSTS = ["10.0.17763", "10.0.20348", "10.0.26100"]


def _host(text: str, build: str = "") -> str:
    for token, value in HOST.items():
        text = text.replace(token, value)
    return text.replace("$HOST_BUILD", build)


def _platform(value: str | dict[str, Any], build: str = "") -> Platform:
    if isinstance(value, str):
        return parse_platform(_host(value, build))
    return Platform.model_validate(
        {
            key: [_host(v, build) for v in item] if isinstance(item, list) else _host(item, build)
            for key, item in value.items()
        }
    )


def _sorted(comparer: MatchComparer, platforms: list[Platform]) -> list[Platform]:
    def compare(a: Platform, b: Platform) -> int:
        return -1 if comparer.less(a, b) else 1 if comparer.less(b, a) else 0

    return sorted(platforms, key=cmp_to_key(compare))


@pytest.mark.parametrize("row", rows(PEER, "TestParseSelector"))
def test_parse_match_and_format(row: dict[str, Any]) -> None:
    parsed = parse_platform(row["input"])
    assert parsed == normalize(_platform(row["expected"]))
    matcher = Exact(parsed)
    assert matcher.match(_platform(row["expected"]))
    for other in row.get("matches", []):
        assert matcher.match(_platform(other)), other
    formatted = format_platform(parsed)
    assert formatted == (row["ocimirror"] if "difference" in row else _host(row["formatted"]))
    assert parse_platform(formatted) == parsed


@pytest.mark.parametrize("row", rows(PEER, "TestFormatAllEncoding") + rows(PEER, "TestFormatAllSkipsEmptyOSFeatures"))
def test_format_encodes_options(row: dict[str, Any]) -> None:
    platform = _platform(row["platform"])
    formatted = format_platform(platform)
    assert formatted == row["expected"]
    reparsed = parse_platform(formatted)
    assert reparsed.os_version == platform.os_version
    assert (
        reparsed.os_features
        == normalize(
            platform.model_copy(update={"os_features": [f for f in platform.os_features or [] if f]})
        ).os_features
    )


@pytest.mark.parametrize("row", rows(PEER, "TestParseSelectorInvalid"))
def test_parse_refuses(row: dict[str, Any]) -> None:
    with pytest.raises(InvalidPlatform):
        parse_platform(row["input"])


@pytest.mark.parametrize("row", rows(PEER, "TestOnly"))
def test_only(row: dict[str, Any]) -> None:
    comparer = only(row["platform"])
    assert [p for p in row["match"] if not comparer.match(parse_platform(p))] == []
    assert [p for p in row["no_match"] if comparer.match(parse_platform(p))] == []


@pytest.mark.parametrize("row", rows(PEER, "TestOnlyStrict"))
def test_only_strict(row: dict[str, Any]) -> None:
    comparer = any_of([row["platform"]])
    assert [p for p in row["match"] if not comparer.match(parse_platform(p))] == []
    assert [p for p in row["no_match"] if comparer.match(parse_platform(p))] == []


@pytest.mark.parametrize("strict", [False, True], ids=["only", "only-strict/ordered/any"])
@pytest.mark.parametrize("row", rows(PEER, "TestCompareOSFeatures"))
def test_os_features_order(row: dict[str, Any], strict: bool) -> None:
    comparer = any_of([row["platform"]]) if strict else only(row["platform"])
    ordered = _sorted(comparer, [parse_platform(p) for p in row["platforms"]])
    assert ordered == [parse_platform(p) for p in row["expected"]]


@pytest.mark.parametrize("row", rows(PEER, "Test_PlatformCompat"))
def test_windows_stable_abi(row: dict[str, Any]) -> None:
    assert windows_host_runs(f"10.0.{row['host']}", f"10.0.{row['image']}") is row["runs"]


@pytest.mark.parametrize("row", rows(PEER, "Test_PlatformOrder"))
def test_windows_host_picks_newest_image_it_runs(row: dict[str, Any]) -> None:
    candidates = [_platform(p) for p in row["platforms"]]
    best = only(_platform(row["host"])).best(candidates)
    assert best is not None
    assert (candidates[best].os, candidates[best].os_version) == (row["want"]["os"], row["want"]["os.version"])


@pytest.mark.parametrize("row", rows(PEER, "TestMatchComparerMatch_ABICheckWCOW"))
def test_windows_matcher(row: dict[str, Any]) -> None:
    assert Exact(_platform(row["host"])).match(_platform(row["image"])) is row["match"]


@pytest.mark.parametrize("row", rows(PEER, "TestWindowsMatchComparerLess"))
def test_windows_order(row: dict[str, Any]) -> None:
    ordered = _sorted(only(_platform(row["host"])), [_platform(p) for p in row["platforms"]])
    assert ordered == [_platform(p) for p in row["expected"]]


@pytest.mark.parametrize("build", WINDOWS_HOSTS)
@pytest.mark.parametrize("row", rows(PEER, "TestMatchComparerMatch_WCOW"))
def test_windows_host_default(row: dict[str, Any], build: str) -> None:
    host = Platform(os="windows", architecture="amd64", os_version=build)
    assert Exact(host).match(_platform(row["image"], build)) is row["match"]


@pytest.mark.parametrize("build", WINDOWS_HOSTS)
@pytest.mark.parametrize("row", rows(PEER, "TestMatchComparerMatch_LCOW"))
def test_linux_on_a_windows_host(row: dict[str, Any], build: str) -> None:
    assert Exact(parse_platform("linux/amd64")).match(_platform(row["image"], build)) is row["match"]


@pytest.mark.parametrize("row", rows(PEER, "TestFallbackOnOSVersion"))
def test_unreadable_windows_version(row: dict[str, Any]) -> None:
    assert Exact(_platform(row["wanted"])).match(_platform(row["image"])) is row["match"]
