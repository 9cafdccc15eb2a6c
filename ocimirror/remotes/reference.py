"""Image references (``docker.io/library/alpine:3.20@sha256:...``), parsed and normalised as Docker does.

A reference names a registry host, a repository inside it and what to pull: a tag, a digest or both. Users
type short forms (``alpine``, ``user/app:1``); everything downstream (store annotations, registry URLs,
credentials look-ups) needs the one normalised form, so it is computed once here. Validation errors name
the part that is wrong, because "invalid reference" alone does not help anyone fix a config file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..digest import validate_digest
from ..errors import InvalidDigest, InvalidReference

#: The registry a reference without a host points at, and the host its API really lives on.
DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
#: Older spellings of Docker Hub that normalise to :data:`DOCKER_HUB`.
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"
#: Docker's limit on the length of the repository path (since distribution/reference v0.6.0 the registry
#: host does not count).
MAX_NAME_LENGTH = 255
#: The highest TCP port; a reference with a higher one can never be pulled.
MAX_PORT = 65535

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)  # \w as in Go: [A-Za-z0-9_]
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:]+\])(?::(?P<port>[0-9]+))?")
#: An image ID (64 hex digits) alone is not a name: Docker refuses it so it is never mistaken for one.
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: ``registry/repository[:tag][@digest]``.

    ``tag`` and ``digest`` may both be set; the digest then decides what is pulled and the tag is what the
    image is recorded under.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host serving the registry API: Docker Hub's API is not on ``docker.io`` itself."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def object(self) -> str:
        """What ``/v2/<name>/manifests/<object>`` asks for: the digest when known, else the tag."""
        if self.digest is not None:
            return self.digest
        return self.tag if self.tag is not None else DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        """The same repository at ``tag`` (any digest dropped: a new tag means a new resolve)."""
        return replace(self, tag=_check_tag(tag, f"{self.name}:{tag}"), digest=None)

    def with_digest(self, digest: str) -> Reference:
        """The same reference pinned to ``digest`` (the tag kept, for recording the image under it)."""
        return replace(self, digest=_check_digest(digest, f"{self.name}@{digest}"))


def parse_reference(text: str) -> Reference:
    """Parse and normalise ``text`` like Docker: ``alpine`` -> ``docker.io/library/alpine:latest``.

    The first path component is a registry host only if it contains ``.`` or ``:``, is ``localhost``, or
    has an upper-case letter (Docker's rule, so ``user/app`` is a Docker Hub repository and ``LOCALDOMAIN/app``
    is not). A reference without tag or digest gets the tag ``latest``; one with only a digest keeps no tag.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidReference("image reference is empty")
    if text != text.strip() or any(ch.isspace() for ch in text):
        raise InvalidReference(f"image reference {text[:300]!r} contains whitespace")
    if _IMAGE_ID.fullmatch(text):
        raise InvalidReference(f"image reference {text!r} is a 64-digit hexadecimal image ID, not a repository name")
    remainder, digest = _split_digest(text)
    remainder, tag = _split_tag(remainder, text)
    registry, repository = _split_registry(remainder, text)
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    for component in repository.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            raise InvalidReference(_component_problem(component, text))
    if len(repository) > MAX_NAME_LENGTH:
        raise InvalidReference(
            f"image reference {text[:300]!r}: repository path longer than {MAX_NAME_LENGTH} characters"
        )
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest)


def _split_digest(text: str) -> tuple[str, str | None]:
    remainder, sep, digest = text.partition("@")
    if not sep:
        return text, None
    return remainder, _check_digest(digest, text)


def _check_digest(digest: str, text: str) -> str:
    try:
        return validate_digest(digest)
    except InvalidDigest as error:
        raise InvalidReference(f"image reference {text[:300]!r}: bad digest: {error}") from None


def _split_tag(remainder: str, text: str) -> tuple[str, str | None]:
    # A ':' after the last '/' separates the tag; one before it belongs to a host:port.
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon <= last_slash:
        return remainder, None
    return remainder[:colon], _check_tag(remainder[colon + 1 :], text)


def _check_tag(tag: str, text: str) -> str:
    if not _TAG.fullmatch(tag):
        raise InvalidReference(
            f"image reference {text[:300]!r}: bad tag {tag[:200]!r} "
            "(letters, digits, '_', '.', '-'; at most 128 characters; not starting with '.' or '-')"
        )
    return tag


def _split_registry(remainder: str, text: str) -> tuple[str, str]:
    first, sep, rest = remainder.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        host = _HOST.fullmatch(first)
        if host is None:
            raise InvalidReference(f"image reference {text[:300]!r}: bad registry host {first[:200]!r}")
        if host["port"] is not None and int(host["port"]) > MAX_PORT:
            raise InvalidReference(
                f"image reference {text[:300]!r}: bad registry host {first[:200]!r} (port above {MAX_PORT})"
            )
        if not rest:
            raise InvalidReference(f"image reference {text[:300]!r}: repository is missing after the host")
        registry = DOCKER_HUB if first.lower() in DOCKER_HUB_ALIASES else first
        return registry, rest
    if not remainder:
        raise InvalidReference(f"image reference {text[:300]!r}: repository is missing")
    return DOCKER_HUB, remainder


def _component_problem(component: str, text: str) -> str:
    prefix = f"image reference {text[:300]!r}: bad repository component {component[:200]!r}"
    if not component:
        return f"{prefix} (empty: doubled or trailing '/')"
    if component.lower() != component:
        return f"{prefix} (must be lowercase)"
    return f"{prefix} (lowercase letters and digits, separated by '.', '_', '__' or '-')"


def is_repository_path(text: str) -> bool:
    """Whether ``text`` is a repository path in distribution's grammar: lowercase components joined by ``/``
    (``library/alpine``), as every client can send it in ``/v2/<name>/``."""
    return 0 < len(text) <= MAX_NAME_LENGTH and all(_PATH_COMPONENT.fullmatch(part) for part in text.split("/"))


def is_registry_host(text: str) -> bool:
    """Whether ``text`` is a registry host as references name it: ``host``, ``host:port`` or ``[v6]:port``."""
    return _HOST.fullmatch(text) is not None


def is_tag(text: str) -> bool:
    """Whether ``text`` is a tag in distribution's grammar (``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``)."""
    return _TAG.fullmatch(text) is not None
