"""Which stored repository a ``/v2/<name>/`` request means, and which name clients can use for each one.

A store keeps images under their full source name (``docker.io/library/alpine``, ``registry.corp:5000/app``),
but clients can only send names in distribution's grammar: lowercase path components, no port. So a request
name is translated, in this order:

1. containerd's mirror requests carry the source registry as ``?ns=registry.corp:5000``: that registry
   plus the name;
2. a ``--map PREFIX=REGISTRY`` whose prefix starts the name (longest first): ``corp/app`` with
   ``corp=registry.corp:5000`` is ``registry.corp:5000/app``;
3. a first component that is a registry host (a dot, a port or ``localhost``, as Docker decides):
   ``ghcr.io/org/app`` as it is;
4. anything else is Docker Hub, as Docker resolves it: ``alpine`` and ``library/alpine`` are
   ``docker.io/library/alpine``.

The reverse, :meth:`NameMap.client_name`, is what ``_catalog`` lists: a name that rule 2-4 map back to the
stored repository, or nothing when only containerd's ``?ns=`` reaches it (a registry with a port and no map).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError, InvalidReference
from ..remotes.reference import (
    DOCKER_HUB,
    DOCKER_HUB_ALIASES,
    is_registry_host,
    is_repository_path,
    parse_reference,
)


class InvalidName(ValueError):
    """A request names no repository in distribution's grammar (``NAME_INVALID``)."""


@dataclass(frozen=True)
class Mapping:
    """``--map PREFIX=REGISTRY``: names under ``prefix/`` are served from the stored ``registry/``.

    ``registry`` is a host with optional port and optional path (``registry.corp:5000/team``).
    """

    prefix: str
    registry: str

    @classmethod
    def parse(cls, text: str) -> Mapping:
        """Parse ``PREFIX=REGISTRY``; a ``ConfigError`` names what is wrong."""
        prefix, sep, registry = text.partition("=")
        prefix, registry = prefix.strip("/"), registry.strip("/")
        if not sep or not prefix or not registry:
            raise ConfigError(f"--map {text!r}: expected PREFIX=REGISTRY, e.g. corp=registry.corp:5000")
        if not is_repository_path(prefix):
            raise ConfigError(
                f"--map {text!r}: prefix {prefix!r} is no repository name "
                "(lowercase letters and digits, separated by '.', '_', '-' or '/')"
            )
        host, _, path = registry.partition("/")
        if not is_registry_host(host) or (path and not is_repository_path(path)):
            raise ConfigError(f"--map {text!r}: {registry!r} is no registry host[:port][/path]")
        return cls(prefix, registry)


class NameMap:
    """Translates request names to stored repository names and back (see the module docstring)."""

    def __init__(self, mappings: list[Mapping] | tuple[Mapping, ...] = ()) -> None:
        prefixes = [mapping.prefix for mapping in mappings]
        if duplicates := sorted({prefix for prefix in prefixes if prefixes.count(prefix) > 1}):
            raise ConfigError(f"--map prefix {duplicates[0]!r} is given twice")
        # Longest first, so ``corp/team`` wins over ``corp`` for ``corp/team/app``.
        self._by_prefix = sorted(mappings, key=lambda mapping: -len(mapping.prefix))
        self._by_registry = sorted(mappings, key=lambda mapping: -len(mapping.registry))

    def stored_name(self, name: str, namespace: str | None = None) -> str:
        """The stored repository ``/v2/<name>/`` means; ``namespace`` is containerd's ``ns`` parameter.

        Raises ``InvalidName`` for a name (or namespace) no client can have sent.
        """
        if namespace is not None:
            if not is_registry_host(namespace) or not is_repository_path(name):
                raise InvalidName(f"invalid repository name {name[:300]!r} in namespace {namespace[:300]!r}")
            registry = DOCKER_HUB if namespace.lower() in DOCKER_HUB_ALIASES else namespace
            return f"{registry}/{name}"
        if not is_repository_path(name):  # what /v2/<name>/ may hold: lowercase components, no ':' or '@'
            raise InvalidName(f"invalid repository name {name[:300]!r}")
        try:
            source = parse_reference(name)  # Docker's rules 3 and 4, and the grammar of every component
        except InvalidReference:
            raise InvalidName(f"invalid repository name {name[:300]!r}") from None
        for mapping in self._by_prefix:
            if name.startswith(f"{mapping.prefix}/"):
                return f"{mapping.registry}/{name.removeprefix(mapping.prefix + '/')}"
        return source.name

    def client_name(self, stored: str) -> str | None:
        """The name clients use for the stored repository ``stored``, or ``None`` if only ``?ns=`` reaches it."""
        candidates: list[str] = []
        for mapping in self._by_registry:
            if stored.startswith(f"{mapping.registry}/"):
                candidates.append(f"{mapping.prefix}/{stored.removeprefix(mapping.registry + '/')}")
        registry, _, repository = stored.partition("/")
        candidates.append(repository if registry == DOCKER_HUB else stored)
        for candidate in candidates:
            if is_repository_path(candidate) and self._reaches(candidate, stored):
                return candidate
        return None

    def _reaches(self, name: str, stored: str) -> bool:
        try:
            return self.stored_name(name) == stored
        except InvalidName:
            return False

    def unreachable_registries(self, stored_names: list[str]) -> list[str]:
        """The registries of ``stored_names`` whose repositories no client name reaches (for a start-up hint)."""
        return sorted({name.partition("/")[0] for name in stored_names if self.client_name(name) is None})
