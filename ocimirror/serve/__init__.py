"""``ocimirror serve``: a store as a read-only OCI distribution registry that every client can pull from.

- :mod:`.names`: which stored repository a request name means (``--map``, Docker Hub names, ``?ns=``);
- :mod:`.catalog`: what each repository holds, so content is served only under names that hold it;
- :mod:`.blobs`: reading blobs safely (regular files inside the store only) in bounded chunks, by range;
- :mod:`.auth`: Basic authentication from an htpasswd file;
- :mod:`.errors`: the spec's JSON errors;
- :mod:`.app`: the ASGI application (Starlette routing);
- :mod:`.server`: running it with uvicorn (TLS, idle timeouts, graceful shutdown).
"""

from __future__ import annotations

from .app import RegistryApp
from .auth import Htpasswd, MissingDependency
from .names import Mapping, NameMap
from .server import RegistryServer, ServeError, TLSFiles

__all__ = [
    "Htpasswd",
    "Mapping",
    "MissingDependency",
    "NameMap",
    "RegistryApp",
    "RegistryServer",
    "ServeError",
    "TLSFiles",
]
