"""Registry remotes: references, per-host settings and credentials, authentication, and the client that
resolves references and fetches content from OCI distribution registries and their mirrors.

Typical use::

    from ocimirror.remotes import Registry, parse_reference

    with Registry() as registry:
        ref = parse_reference("alpine:3.20")
        descriptor = registry.resolve(ref)
        fetcher = registry.fetcher(ref)   # an ocimirror.content.Fetcher
"""

from .config import Credentials, RegistryConfig
from .credentials import lookup_credentials
from .fetcher import RegistryFetcher
from .hosts import Endpoint, RegistryHosts
from .reference import Reference, parse_reference
from .registry import Registry

__all__ = [
    "Credentials",
    "Endpoint",
    "Reference",
    "Registry",
    "RegistryConfig",
    "RegistryFetcher",
    "RegistryHosts",
    "lookup_credentials",
    "parse_reference",
]
