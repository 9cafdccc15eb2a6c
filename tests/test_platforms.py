"""Platform parsing, normalisation and matching: containerd's table of spellings and fallbacks."""

import pytest

from ocimirror.descriptor import Platform
from ocimirror.errors import InvalidPlatform
from ocimirror.platforms import any_of, compatible, format_platform, only, parse_platform


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("x86_64", "linux/amd64"),
        ("amd64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/aarch64", "linux/arm64/v8"),
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/arm64/8", "linux/arm64/v8"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/6", "linux/arm/v6"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/i386", "linux/386"),
        ("Linux/AMD64", "linux/amd64"),
        ("windows", "windows/amd64"),
        ("linux/s390x", "linux/s390x"),
    ],
)
def test_parse_normalises_like_containerd(text: str, expected: str) -> None:
    assert format_platform(parse_platform(text)) == expected


def test_parse_os_version() -> None:
    platform = parse_platform("windows(10.0.17763.5458)/amd64")
    assert (platform.os, platform.architecture, platform.os_version) == ("windows", "amd64", "10.0.17763.5458")


@pytest.mark.parametrize("text", ["", "linux/", "/amd64", "linux/amd64/v8/extra", "linux/amd 64", "lin(ux/amd64"])
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(InvalidPlatform, match="invalid platform"):
        parse_platform(text)


def _p(os: str, arch: str, variant: str | None = None, os_version: str | None = None) -> Platform:
    return Platform(os=os, architecture=arch, variant=variant, os_version=os_version)


@pytest.mark.parametrize(
    ("wanted", "candidate", "matches"),
    [
        ("linux/amd64", _p("linux", "amd64"), True),
        ("linux/amd64", _p("linux", "x86_64"), True),
        ("linux/amd64", _p("linux", "arm64"), False),
        ("linux/amd64", _p("windows", "amd64"), False),
        ("linux/arm64", _p("linux", "arm64"), True),  # no variant == v8
        ("linux/arm64", _p("linux", "arm64", "v8"), True),
        ("linux/arm64/v8", _p("linux", "aarch64"), True),
        ("linux/arm64", _p("linux", "arm", "v7"), True),  # arm64 hosts run 32-bit arm
        ("linux/arm/v7", _p("linux", "arm", "v7"), True),
        ("linux/arm/v7", _p("linux", "arm", "v6"), True),
        ("linux/arm/v7", _p("linux", "arm", "v5"), True),
        ("linux/arm/v6", _p("linux", "arm", "v7"), False),
        ("linux/arm/v7", _p("linux", "arm", "v8"), False),
        ("linux/amd64", _p("linux", "386"), True),
        ("linux/amd64/v2", _p("linux", "amd64"), True),
        ("linux/amd64", _p("linux", "amd64", "v2"), False),
        ("windows(10.0.17763.100)/amd64", _p("windows", "amd64", None, "10.0.17763.5458"), True),
        ("windows(10.0.17763.100)/amd64", _p("windows", "amd64", None, "10.0.20348.100"), False),
        ("windows(10.0.17763)/amd64", _p("windows", "amd64"), True),
    ],
)
def test_only_matches_with_containerd_fallbacks(wanted: str, candidate: Platform, matches: bool) -> None:
    assert only(wanted).match(candidate) is matches


def test_fallbacks_are_ordered_best_first() -> None:
    comparer = only("linux/arm/v7")
    v5, v6, v7 = _p("linux", "arm", "v5"), _p("linux", "arm", "v6"), _p("linux", "arm", "v7")
    assert comparer.less(v7, v6) and comparer.less(v6, v5)
    assert not comparer.less(v5, v7)
    assert comparer.less(v5, _p("linux", "amd64"))  # a match beats a non-match
    assert [format_platform(p) for p in compatible(parse_platform("linux/arm/v7"))] == [
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/arm/v5",
    ]


def test_any_of_is_exact_and_prefers_earlier() -> None:
    comparer = any_of(["linux/arm64", "linux/amd64"])
    assert comparer.match(_p("linux", "amd64"))
    assert not comparer.match(_p("linux", "386"))
    assert comparer.less(_p("linux", "arm64"), _p("linux", "amd64"))


def test_unknown_arm64_variant_matches_only_itself() -> None:
    # A documented difference: containerd's Only matches nothing for an arm64 variant it does not know.
    comparer = only("linux/arm64/v10")
    assert comparer.match(_p("linux", "arm64", "v10"))
    assert not comparer.match(_p("linux", "arm64", "v8"))
