"""Platform specifiers, normalisation and matching, with the semantics of containerd's ``platforms``.

Registries and build tools spell the same platform several ways (``x86_64``/``amd64``, ``aarch64``/``arm64``,
``arm64`` with or without ``v8``). Everything here compares normalised platforms, and a matcher for one
platform also accepts the platforms that can run on it, in order of preference (``linux/arm/v7`` accepts
``v6`` then ``v5``), so the best image for a request can be chosen from an index.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from .descriptor import Platform
from .errors import InvalidPlatform

DEFAULT_OS = "linux"

_OS_NAMES = frozenset(
    {
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "illumos",
        "ios",
        "js",
        "linux",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "wasip1",
        "windows",
    }
)
_COMPONENT = re.compile(r"^[A-Za-z0-9_-]+$")
_OS_WITH_VERSION = re.compile(r"^(?P<os>[A-Za-z0-9_-]+)(?:\((?P<version>[A-Za-z0-9_.-]+)\))?$")


def _normalize_os(os: str) -> str:
    os = os.lower()
    return "darwin" if os == "macos" else os


def _normalize_arch(architecture: str, variant: str | None) -> tuple[str, str | None]:
    architecture, variant = architecture.lower(), (variant or "").lower()
    if architecture in {"i386", "x86_32", "x86-32"}:
        return "386", None
    if architecture in {"x86_64", "x86-64", "amd64"}:
        return "amd64", None if variant in {"", "v1"} else variant
    if architecture in {"aarch64", "arm64"}:
        if variant in {"", "8", "v8", "v8.0"}:
            return "arm64", "v8"
        return "arm64", variant if variant.startswith("v") else f"v{variant}"
    if architecture == "armhf":
        return "arm", "v7"
    if architecture == "armel":
        return "arm", "v6"
    if architecture == "arm":
        if variant in {"", "7"}:
            return "arm", "v7"
        if variant in {"5", "6", "8"}:
            return "arm", f"v{variant}"
        return "arm", variant
    return architecture, variant or None


def normalize(platform: Platform) -> Platform:
    """The canonical spelling of ``platform``: ``x86_64`` -> ``amd64``, ``aarch64`` -> ``arm64/v8``,
    ``arm`` -> ``arm/v7``, ``i386`` -> ``386``."""
    architecture, variant = _normalize_arch(platform.architecture, platform.variant)
    return platform.model_copy(
        update={"os": _normalize_os(platform.os), "architecture": architecture, "variant": variant}
    )


def parse_platform(specifier: str) -> Platform:
    """Parse ``os[(version)]/arch[/variant]`` (or a bare ``os`` or ``arch``) into a normalised Platform.

    A single component is taken as an OS when it names one (``windows``), otherwise as an architecture on
    Linux (``arm64``): a mirror has no host platform to default to, and Linux is what registries hold.
    """
    parts = specifier.strip().split("/")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise InvalidPlatform(f"invalid platform {specifier!r}: expected os/arch[/variant]")
    head = _OS_WITH_VERSION.match(parts[0])
    if head is None:
        raise InvalidPlatform(f"invalid platform {specifier!r}: bad os component {parts[0]!r}")
    for part in parts[1:]:
        if not _COMPONENT.match(part):
            raise InvalidPlatform(f"invalid platform {specifier!r}: bad component {part!r}")
    os, os_version = head["os"], head["version"]
    if len(parts) == 1:
        if os.lower() in _OS_NAMES:
            default_arch = "amd64"
            return normalize(Platform(os=os, architecture=default_arch, os_version=os_version))
        if os_version is not None:
            raise InvalidPlatform(f"invalid platform {specifier!r}: a version needs an os")
        return normalize(Platform(os=DEFAULT_OS, architecture=os))
    variant = parts[2] if len(parts) == 3 else None
    return normalize(Platform(os=os, architecture=parts[1], variant=variant, os_version=os_version))


def format_platform(platform: Platform) -> str:
    """``os/arch[/variant]`` of the normalised platform, the inverse of ``parse_platform``."""
    return str(normalize(platform))


class Matcher(Protocol):
    """Decides whether a platform is acceptable."""

    def match(self, platform: Platform) -> bool: ...


class MatchComparer(Matcher, Protocol):
    """A Matcher that also orders acceptable platforms, most preferred first."""

    def less(self, a: Platform, b: Platform) -> bool: ...


def _os_version_matches(wanted: Platform, candidate: Platform) -> bool:
    """An unset version matches anything; Windows compares ``major.minor.build`` as containerd does."""
    if not wanted.os_version or not candidate.os_version:
        return True
    if wanted.os == "windows":
        return wanted.os_version.split(".")[:3] == candidate.os_version.split(".")[:3]
    return wanted.os_version == candidate.os_version


class Exact:
    """Matches one normalised platform: os, architecture and variant equal, os.version compatible."""

    def __init__(self, platform: Platform) -> None:
        self.platform = normalize(platform)

    def match(self, platform: Platform) -> bool:
        candidate = normalize(platform)
        wanted = self.platform
        return (
            candidate.os == wanted.os
            and candidate.architecture == wanted.architecture
            and candidate.variant == wanted.variant
            and _os_version_matches(wanted, candidate)
        )

    def __repr__(self) -> str:
        return f"Exact({format_platform(self.platform)!r})"


class Ordered:
    """Matches any of its matchers; a platform matched by an earlier one is preferred."""

    def __init__(self, matchers: Sequence[Matcher]) -> None:
        self.matchers = list(matchers)

    def rank(self, platform: Platform) -> int | None:
        """The index of the first matcher that accepts ``platform``, or ``None``."""
        for position, matcher in enumerate(self.matchers):
            if matcher.match(platform):
                return position
        return None

    def match(self, platform: Platform) -> bool:
        return self.rank(platform) is not None

    def less(self, a: Platform, b: Platform) -> bool:
        rank_a, rank_b = self.rank(a), self.rank(b)
        if rank_a is None:
            return False
        return rank_b is None or rank_a < rank_b

    def __repr__(self) -> str:
        return f"Ordered({self.matchers!r})"


def compatible(platform: Platform) -> list[Platform]:
    """``platform`` followed by the platforms that run on it, best first (containerd's platform vector):
    ``amd64/vN`` -> lower amd64 levels -> ``386``; ``arm/vN`` -> ``vN-1`` .. ``v5``; ``arm64`` -> ``arm/v8``
    and below."""
    platform = normalize(platform)
    vector = [platform]
    variant_level = int(platform.variant[1:]) if platform.variant and platform.variant[1:].isdigit() else None
    if platform.architecture == "amd64":
        for level in range((variant_level or 1) - 1, 0, -1):
            vector.append(platform.model_copy(update={"variant": None if level == 1 else f"v{level}"}))
        vector.append(platform.model_copy(update={"architecture": "386", "variant": None}))
    elif platform.architecture == "arm" and variant_level is not None:
        for level in range(variant_level - 1, 4, -1):
            vector.append(platform.model_copy(update={"variant": f"v{level}"}))
    elif platform.architecture == "arm64":
        vector.extend(compatible(platform.model_copy(update={"architecture": "arm", "variant": "v8"})))
    return vector


def only(platform: Platform | str) -> Ordered:
    """A MatchComparer for one platform with containerd's fallbacks (``platforms.Only``)."""
    if isinstance(platform, str):
        platform = parse_platform(platform)
    return Ordered([Exact(candidate) for candidate in compatible(platform)])


def any_of(platforms: Sequence[Platform | str]) -> Ordered:
    """Matches any of ``platforms`` exactly (no fallbacks), preferring earlier ones (``platforms.Any``)."""
    parsed = [parse_platform(p) if isinstance(p, str) else p for p in platforms]
    return Ordered([Exact(p) for p in parsed])
