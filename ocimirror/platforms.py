"""Platform specifiers, normalisation and matching, with the semantics of containerd's ``platforms``.

Registries and build tools spell the same platform several ways (``x86_64``/``amd64``, ``aarch64``/``arm64``,
``arm64`` with or without ``v8``). Everything here compares normalised platforms, and a matcher for one
platform also accepts the platforms that can run on it, in order of preference (``linux/arm/v7`` accepts
``v6`` then ``v5``; ``linux/arm64/v9`` accepts ``v8.5`` down to ``v8``), so the best image for a request can
be chosen from an index.

A specifier is ``os[(options)]/arch[/variant]``; the options are an ``os.version`` and ``+``-separated
``os.features`` (``windows(10.0.17763+win32k)/amd64``), with ``%``, ``+``, ``(``, ``)`` and ``/`` inside them
percent-encoded. Where containerd fills in the host's OS or architecture, ocimirror uses ``linux`` and
``amd64``: a mirror has no host platform of its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import unquote

from .descriptor import Platform
from .errors import InvalidPlatform

DEFAULT_OS = "linux"
DEFAULT_ARCHITECTURE = "amd64"

#: The operating systems and architectures containerd recognises in a one-component specifier.
_KNOWN_OS = frozenset(
    [
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "hurd",
        "illumos",
        "ios",
        "js",
        "linux",
        "nacl",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "windows",
        "zos",
    ]
)
_KNOWN_ARCHITECTURES = frozenset(
    [
        "386",
        "amd64",
        "amd64p32",
        "arm",
        "armbe",
        "arm64",
        "arm64be",
        "ppc64",
        "ppc64le",
        "loong64",
        "mips",
        "mipsle",
        "mips64",
        "mips64le",
        "mips64p32",
        "mips64p32le",
        "ppc",
        "riscv",
        "riscv64",
        "s390",
        "s390x",
        "sparc",
        "sparc64",
        "wasm",
    ]
)
_COMPONENT = re.compile(r"[A-Za-z0-9_.-]+")
_OS_WITH_OPTIONS = re.compile(
    r"(?P<os>[A-Za-z0-9_-]+)(?:\((?P<version>[A-Za-z0-9_.%-]*)(?P<features>(?:\+[A-Za-z0-9_.%-]+)*)\))?"
)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: Characters that would end or split an option, percent-encoded when a platform is formatted.
_OPTION_ESCAPES = {"%": "%25", "+": "%2B", "(": "%28", ")": "%29", "/": "%2F"}
_ARM64_VARIANT = re.compile(r"v(?P<major>[89])(?:\.(?P<minor>[0-9]))?")
#: Windows builds from which a host also runs images of an earlier build (the stable ABI): ltsc2022, ltsc2025.
_WINDOWS_STABLE_ABI_RELEASES = (20348, 26100)


def _normalize_os(os: str) -> str:
    os = os.lower()
    if not os:
        return DEFAULT_OS
    return "darwin" if os == "macos" else os


def _normalize_arch(architecture: str, variant: str) -> tuple[str, str]:
    """containerd's spelling table; unknown architectures and variants are kept, lower-cased."""
    architecture, variant = architecture.lower(), variant.lower()
    if architecture == "i386":
        return "386", ""
    if architecture in {"x86_64", "x86-64", "amd64"}:
        return "amd64", "" if variant == "v1" else variant
    if architecture in {"aarch64", "arm64"}:
        if variant in {"8", "v8", "v8.0"}:
            return "arm64", ""
        return "arm64", "v9" if variant in {"9", "9.0", "v9.0"} else variant
    if architecture == "armhf":
        return "arm", "v7"
    if architecture == "armel":
        return "arm", "v6"
    if architecture == "arm" and variant in {"", "7"}:
        return "arm", "v7"
    if architecture == "arm" and variant in {"5", "6", "8"}:
        return "arm", f"v{variant}"
    return architecture, variant


def normalize(platform: Platform) -> Platform:
    """The canonical form of ``platform``: ``x86_64`` -> ``amd64``, ``aarch64`` -> ``arm64/v8``, ``arm`` ->
    ``arm/v7``, ``i386`` -> ``386``, ``macOS`` -> ``darwin``; ``os.features`` sorted without repeats.

    containerd leaves the implied variants of ``arm64`` and ``arm`` out of some spellings; ocimirror always
    writes ``v8`` and ``v7``. Both sides of every comparison are normalised, so matching is the same.
    """
    architecture, variant = _normalize_arch(platform.architecture, platform.variant or "")
    if architecture == "arm64" and not variant:
        variant = "v8"
    features = sorted(set(platform.os_features)) if platform.os_features else None
    return platform.model_copy(
        update={
            "os": _normalize_os(platform.os),
            "architecture": architecture,
            "variant": variant or None,
            "os_features": features,
        }
    )


def _decode_option(value: str, specifier: str) -> str:
    if "%" not in value:
        return value
    if _BAD_ESCAPE.search(value):
        raise InvalidPlatform(f"invalid platform {specifier!r}: bad percent-escape in {value!r}")
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise InvalidPlatform(f"invalid platform {specifier!r}: {value!r} does not decode to UTF-8") from None


def _encode_option(value: str) -> str:
    return "".join(_OPTION_ESCAPES.get(ch, ch) for ch in value)


def parse_platform(specifier: str) -> Platform:
    """Parse ``os[(version+feature...)]/arch[/variant]`` (or a bare ``os`` or ``arch``) into a normalised
    Platform, as containerd's ``platforms.Parse``.

    A single component is an OS when it names one (``windows`` -> ``windows/amd64``), otherwise a known
    architecture on Linux (``arm64`` -> ``linux/arm64/v8``); anything else is refused.
    """
    if "*" in specifier:
        raise InvalidPlatform(f"invalid platform {specifier!r}: wildcards are not supported")
    parts = specifier.split("/", 3)
    head = _OS_WITH_OPTIONS.fullmatch(parts[0])
    if head is None:
        raise InvalidPlatform(f"invalid platform {specifier!r}: bad os component {parts[0]!r}")
    for part in parts[1:]:
        if not _COMPONENT.fullmatch(part):
            raise InvalidPlatform(f"invalid platform {specifier!r}: bad component {part!r}")
    os = _normalize_os(head["os"])
    os_version = _decode_option(head["version"] or "", specifier)
    features = [_decode_option(f, specifier) for f in (head["features"] or "").split("+")[1:]]
    if len(parts) == 1:
        if os in _KNOWN_OS:
            architecture, variant = DEFAULT_ARCHITECTURE, ""
        else:
            architecture, variant = _normalize_arch(parts[0], "")
            if architecture not in _KNOWN_ARCHITECTURES:
                raise InvalidPlatform(f"invalid platform {specifier!r}: unknown operating system or architecture")
            os = DEFAULT_OS
    elif len(parts) == 2:
        architecture, variant = _normalize_arch(parts[1], "")
    elif len(parts) == 3:
        architecture, variant = _normalize_arch(parts[1], parts[2])
    else:
        raise InvalidPlatform(f"invalid platform {specifier!r}: expected os/arch[/variant]")
    return normalize(
        Platform(
            os=os,
            architecture=architecture,
            variant=variant or None,
            os_version=os_version or None,
            os_features=features or None,
        )
    )


def format_platform(platform: Platform) -> str:
    """``os[(version+feature...)]/arch[/variant]`` of the normalised platform (containerd's ``FormatAll``),
    the inverse of ``parse_platform``."""
    platform = normalize(platform)
    head = platform.os
    version = _encode_option(platform.os_version or "")
    features = "+".join(_encode_option(f) for f in platform.os_features or [] if f)
    if version or features:
        head += f"({version}{'+' + features if features else ''})"
    return "/".join([head, platform.architecture] + ([platform.variant] if platform.variant else []))


class Matcher(Protocol):
    """Decides whether a platform is acceptable."""

    def match(self, platform: Platform) -> bool: ...


class MatchComparer(Matcher, Protocol):
    """A Matcher that also orders acceptable platforms, most preferred first."""

    def less(self, a: Platform, b: Platform) -> bool: ...


def _windows_build(os_version: str | None) -> tuple[int, int, int]:
    """``major.minor.build`` of a Windows ``os.version``; ``(0, 0, 0)`` when it has none (matches anything)."""
    fields = (os_version or "").split(".")
    if len(fields) < 3:
        return (0, 0, 0)
    numbers = [int(f) if re.fullmatch(r"[0-9]+", f) else -1 for f in fields[:3]]
    if not (0 <= numbers[0] <= 255 and 0 <= numbers[1] <= 255 and 0 <= numbers[2] <= 65535):
        return (0, 0, 0)
    return (numbers[0], numbers[1], numbers[2])


def windows_host_runs(host: str | None, image: str | None) -> bool:
    """Whether a Windows host of ``os.version`` ``host`` runs an image built for ``image``.

    Before ltsc2022 (build 20348) only the same build runs. From ltsc2022 on, Windows keeps a stable ABI: a
    host runs images from the newest LTSC release older than itself (ltsc2022 or ltsc2025) up to its own
    build. An unset or unreadable host version, or an unset image version, matches anything.
    """
    wanted = _windows_build(host)
    if wanted == (0, 0, 0) or not image:
        return True
    candidate = _windows_build(image)
    if wanted[:2] != candidate[:2]:
        return False
    if wanted[2] < _WINDOWS_STABLE_ABI_RELEASES[0]:
        return wanted[2] == candidate[2]
    oldest = max(
        (r for r in _WINDOWS_STABLE_ABI_RELEASES if wanted[2] > r),
        default=_WINDOWS_STABLE_ABI_RELEASES[0],
    )
    return oldest <= candidate[2] <= wanted[2]


class Exact:
    """Matches one normalised platform: os, architecture and variant equal, ``os.features`` of the candidate
    all offered by the wanted platform, and, for Windows, an ``os.version`` the wanted host runs (other
    systems' ``os.version`` is not compared, as in containerd). Windows images needing ``win32k`` match any
    Windows request, since every Windows host has it."""

    def __init__(self, platform: Platform) -> None:
        self.platform = normalize(platform)

    def match(self, platform: Platform) -> bool:
        wanted = self.platform
        features = list(platform.os_features or [])
        if wanted.os == "windows" and "win32k" in features:
            features.remove("win32k")
        candidate = normalize(platform.model_copy(update={"os_features": features}))
        if (candidate.os, candidate.architecture, candidate.variant) != (
            wanted.os,
            wanted.architecture,
            wanted.variant,
        ):
            return False
        if wanted.os == "windows" and not windows_host_runs(wanted.os_version, platform.os_version):
            return False
        return set(candidate.os_features or []) <= set(wanted.os_features or [])

    def __repr__(self) -> str:
        return f"Exact({format_platform(self.platform)!r})"


def _version_key(os_version: str | None) -> tuple[int, ...]:
    return tuple(int(f) if f.isdigit() else -1 for f in os_version.split(".")) if os_version else ()


class Ordered:
    """Matches any of its matchers; a platform matched by an earlier one is preferred.

    Among platforms matched by the same matcher, one with more ``os.features`` is preferred; with
    ``newest_windows_first`` (a Windows request), then the highest ``os.version``, as containerd orders
    images on a Windows host. Platforms nothing matches are ordered as if they had no ``os.features``, so
    ``linux(+gpu)/amd64`` still comes before ``linux/arm64`` for ``linux/amd64``.
    """

    def __init__(self, matchers: Sequence[Matcher], newest_windows_first: bool = False) -> None:
        self.matchers = list(matchers)
        self.newest_windows_first = newest_windows_first

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
        if rank_a is None and rank_b is None:
            if a.os_features or b.os_features:
                return self.less(a.model_copy(update={"os_features": None}), b.model_copy(update={"os_features": None}))
            return False
        if rank_a is None or rank_b is None:
            return rank_b is None
        if rank_a != rank_b:
            return rank_a < rank_b
        features_a, features_b = len(a.os_features or []), len(b.os_features or [])
        if features_a != features_b:
            return features_a > features_b
        return self.newest_windows_first and _version_key(a.os_version) > _version_key(b.os_version)

    def best(self, platforms: Sequence[Platform]) -> int | None:
        """The position of the most preferred matching platform in ``platforms`` (the first of equals), or
        ``None`` if none matches: what containerd's sorted selection would take."""
        chosen: int | None = None
        for position, platform in enumerate(platforms):
            if self.match(platform) and (chosen is None or self.less(platform, platforms[chosen])):
                chosen = position
        return chosen

    def __repr__(self) -> str:
        return f"Ordered({self.matchers!r})"


def _arm64_fallbacks(variant: str) -> list[str] | None:
    """The arm64 variants a CPU of ``variant`` runs, best first, or ``None`` for a variant containerd does
    not know. Armv9.x includes Armv8.(x+5) (capped at 8.9), so ``v9`` runs ``v9``, ``v8.5`` .. ``v8.1``,
    ``v8``."""
    found = _ARM64_VARIANT.fullmatch(variant)
    if found is None:
        return None
    major, minor = int(found["major"]), int(found["minor"] or 0)
    if major == 9 and minor > 7:
        return None
    steps = [(9, minor), (8, min(minor + 5, 9))] if major == 9 else [(8, minor)]
    return [f"v{m}" if n == 0 else f"v{m}.{n}" for m, top in steps for n in range(top, -1, -1)]


def compatible(platform: Platform) -> list[Platform]:
    """``platform`` followed by the platforms that run on it, best first (containerd's platform vector):
    ``amd64/vN`` -> lower amd64 levels -> ``386``; ``arm/vN`` -> ``vN-1`` .. ``v5``; ``arm64/vX`` -> the
    arm64 variants it includes -> ``arm/v8`` and below."""
    platform = normalize(platform)
    variant = platform.variant or ""
    level = int(variant[1:]) if re.fullmatch(r"v[0-9]+", variant) else None
    vector = [platform]
    if platform.architecture == "amd64":
        for lower in range((level or 1) - 1, 0, -1):
            vector.append(platform.model_copy(update={"variant": None if lower == 1 else f"v{lower}"}))
        vector.append(platform.model_copy(update={"architecture": "386", "variant": None}))
    elif platform.architecture == "arm" and level is not None:
        vector.extend(platform.model_copy(update={"variant": f"v{lower}"}) for lower in range(level - 1, 4, -1))
    elif platform.architecture == "arm64":
        fallbacks = _arm64_fallbacks(variant)
        if fallbacks is not None:
            vector = [platform.model_copy(update={"variant": v}) for v in fallbacks]
            vector.extend(compatible(platform.model_copy(update={"architecture": "arm", "variant": "v8"})))
    return vector


def only(platform: Platform | str) -> Ordered:
    """A MatchComparer for one platform with containerd's fallbacks (``platforms.Only``)."""
    if isinstance(platform, str):
        platform = parse_platform(platform)
    vector = compatible(platform)
    return Ordered([Exact(candidate) for candidate in vector], newest_windows_first=vector[0].os == "windows")


def any_of(platforms: Sequence[Platform | str]) -> Ordered:
    """Matches any of ``platforms`` exactly (no fallbacks), preferring earlier ones (``platforms.Any``; one
    platform: ``platforms.OnlyStrict``)."""
    parsed = [parse_platform(p) if isinstance(p, str) else p for p in platforms]
    return Ordered([Exact(p) for p in parsed], newest_windows_first=any(normalize(p).os == "windows" for p in parsed))
