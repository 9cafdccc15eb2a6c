"""The read-only distribution API over a store, as an ASGI application (Starlette routing).

Endpoints (``GET`` and ``HEAD``; anything else is ``405 UNSUPPORTED``)::

    /v2/                                  API version check (and the Basic auth challenge)
    /v2/_catalog?n=&last=                 the names clients can use, paginated
    /v2/<name>/tags/list?n=&last=         tags of a repository, paginated
    /v2/<name>/manifests/<tag|digest>     manifests and indexes of images stored under that name
    /v2/<name>/blobs/<digest>             any blob of those images, streamed, with Range
    /v2/<name>/referrers/<digest>         the stored referrers of a manifest, as an OCI index
                                          (``?artifactType=`` filters; ``OCI-Filters-Applied`` says so)

Referrers are also served the old ways: the tag schema's ``sha256-<hex>`` tags (an index made from the
stored referrers) and cosign's ``sha256-<hex>.sig``/``.att``/``.sbom`` tags they were found under.

Names are translated by a :class:`~ocimirror.serve.names.NameMap`; what a name may serve comes from the
:class:`~ocimirror.serve.catalog.Catalog`. Store I/O runs in worker threads under one limiter, so slow
storage never blocks the event loop, and each blob response holds one chunk at a time. Every failure is a
JSON error from :mod:`ocimirror.serve.errors`; what went wrong inside is logged as one line, never sent.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_right
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from typing import ParamSpec, TypeVar
from urllib.parse import urlencode

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, Router
from starlette.types import Message, Receive, Scope, Send

from ..digest import validate_digest
from ..errors import DigestMismatch, InvalidDigest, NotFound, SizeMismatch
from ..mediatypes import OCI_INDEX
from ..remotes.reference import is_tag
from ..store import LayoutStore
from . import errors
from .auth import Htpasswd, basic_credentials
from .blobs import BlobReader, RangeNotSatisfiable, open_blob, parse_range, read_verified
from .catalog import Catalog, CatalogSource, CatalogUnavailable, Repository, referrers_index
from .errors import API_VERSION_HEADER, ApiError
from .names import InvalidName, NameMap

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

#: Worker threads doing store I/O at once (reads of blob chunks, stats, catalog rebuilds).
IO_THREADS = 64
READ_METHODS = frozenset({"GET", "HEAD"})
_OCTET_STREAM = "application/octet-stream"


class _ResponseAborted(Exception):
    """A blob failed after its headers were sent: the connection is closed, and the reason was logged."""


class RegistryApp:
    """ASGI application serving ``store`` read-only; ``htpasswd`` turns on Basic authentication."""

    def __init__(
        self,
        store: LayoutStore,
        names: NameMap | None = None,
        htpasswd: Htpasswd | None = None,
        realm: str = "ocimirror",
    ) -> None:
        self.store = store
        self.names = names or NameMap()
        self.htpasswd = htpasswd
        self.realm = realm
        self.catalogs = CatalogSource(store)
        self._limiter = anyio.CapacityLimiter(IO_THREADS)
        self._client_names: tuple[Catalog, list[str]] | None = None
        self.routes = [
            Route("/v2/", self.base),
            Route("/v2", self.base),
            Route("/v2/_catalog", self.catalog),
            Route("/v2/{name:path}/tags/list", self.tags),
            Route("/v2/{name:path}/manifests/{reference}", self.manifest),
            Route("/v2/{name:path}/blobs/{digest}", self.blob),
            Route("/v2/{name:path}/referrers/{digest}", self.referrers),
        ]
        self._router = Router(self.routes, redirect_slashes=False, default=self._not_found)

    def unreachable_registries(self) -> list[str]:
        """Registries whose stored repositories only containerd's ``?ns=`` reaches (no ``--map`` covers them),
        for a hint at start-up; blocking."""
        try:
            stored = list(self.catalogs.current().repositories)
        except CatalogUnavailable:  # logged by the catalog; requests answer 500 until index.json is fixed
            return []
        except OSError as error:
            self._log_store_failure(error)
            return []
        return self.names.unreachable_registries(stored)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan events or websockets to handle
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        method = scope["method"]
        try:
            if self.htpasswd is not None and not await self._authenticated(scope):
                raise errors.unauthorized(self.realm)
            if method not in READ_METHODS:
                raise errors.unsupported()
            await self._router(scope, receive, tracking_send)
        except ApiError as error:
            if not started:
                await error.response(method)(scope, receive, send)
        except _ResponseAborted:
            pass
        except Exception as error:  # noqa: BLE001 - anything else: one log line and a JSON 500, no traceback
            # repr: a path or message with a newline in it stays one line of the log.
            log.error("%s %r failed: %s: %r", method, scope.get("path", "?"), type(error).__name__, str(error))
            if not started:
                await errors.internal("internal error; see the server log").response(method)(scope, receive, send)

    async def _authenticated(self, scope: Scope) -> bool:
        assert self.htpasswd is not None
        header = dict(scope["headers"]).get(b"authorization")
        credentials = basic_credentials(header.decode("latin-1") if header else None)
        if credentials is None:
            return False
        return await self._run(self.htpasswd.check, *credentials)

    async def _run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args)`` in a worker thread, with store errors turned into API errors."""
        try:
            return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs), limiter=self._limiter)
        except CatalogUnavailable:
            raise errors.internal("the store's index cannot be read; see the server log") from None
        except OSError as error:
            self._log_store_failure(error)
            raise errors.internal("the store is not available; see the server log") from None

    def _log_store_failure(self, error: OSError) -> None:
        log.error("store %s failed: %s: %s", self.store, type(error).__name__, error)

    # Endpoints

    async def base(self, request: Request) -> Response:
        return _json_response(request, b"{}")

    async def catalog(self, request: Request) -> Response:
        catalog = await self._run(self.catalogs.current)
        if self._client_names is None or self._client_names[0] is not catalog:
            names = sorted(name for stored in catalog.repositories if (name := self.names.client_name(stored)))
            self._client_names = (catalog, names)
        page, link = _paginate(request, self._client_names[1])
        body = _dump({"repositories": page})
        return _json_response(request, body, link)

    async def tags(self, request: Request) -> Response:
        name = request.path_params["name"]
        repository = await self._repository(request)
        if repository is None:
            raise errors.name_unknown(name)
        page, link = _paginate(request, sorted(repository.tags))
        return _json_response(request, _dump({"name": name, "tags": page}), link)

    async def manifest(self, request: Request) -> Response:
        name, reference = request.path_params["name"], request.path_params["reference"]
        by_digest = ":" in reference
        if by_digest:
            try:
                validate_digest(reference)
            except InvalidDigest:
                raise errors.digest_invalid(reference) from None
        elif not is_tag(reference):
            raise errors.manifest_unknown(name, reference[:200])
        repository = await self._repository(request)
        if repository is None:
            raise errors.manifest_unknown(name, reference)
        node = (repository.documents if by_digest else repository.tags).get(reference)
        if node is None:
            raise errors.manifest_unknown(name, reference)
        headers = {
            "Content-Type": node.media_type,
            "Content-Length": str(node.size),
            "Docker-Content-Digest": node.digest,
            "ETag": f'"{node.digest}"',
            API_VERSION_HEADER[0]: API_VERSION_HEADER[1],
        }
        if request.method == "HEAD":
            return Response(b"", headers=headers)
        generated = repository.generated.get(node.digest)
        if generated is not None:  # a tag schema index, made from the stored referrers
            return Response(generated, headers=headers)
        try:
            content = await self._run(read_verified, self.store, node.digest, node.size)
        except NotFound:
            log.warning("manifest %s of %s is listed in index.json but not stored", node.digest, self.store)
            raise errors.manifest_unknown(name, reference) from None
        except (DigestMismatch, SizeMismatch) as error:
            log.error("manifest %s of %s is damaged (ocimirror verify --repair): %s", node.digest, self.store, error)
            raise errors.internal(f"the stored manifest {node.digest} is damaged") from None
        return Response(content, headers=headers)

    async def blob(self, request: Request) -> Response:
        name, digest = request.path_params["name"], _digest_of(request)
        repository = await self._repository(request)
        if repository is None or digest not in repository.blobs:
            raise errors.blob_unknown(name, digest)
        try:
            reader = await self._run(open_blob, self.store, digest)
        except NotFound:
            log.warning("blob %s of %s is reached by an image but not stored as a regular file", digest, self.store)
            raise errors.blob_unknown(name, digest) from None
        try:
            wanted = parse_range(request.headers.get("range"), reader.size)
        except RangeNotSatisfiable:
            reader.close()
            raise errors.range_not_satisfiable(reader.size) from None
        start, end = (wanted.start, wanted.end) if wanted else (0, reader.size)
        headers = {
            "Content-Type": _OCTET_STREAM,
            "Content-Length": str(end - start),
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            "Accept-Ranges": "bytes",
            API_VERSION_HEADER[0]: API_VERSION_HEADER[1],
        }
        if wanted:
            headers["Content-Range"] = wanted.content_range
        status = HTTPStatus.PARTIAL_CONTENT if wanted else HTTPStatus.OK
        if request.method == "HEAD":
            reader.close()
            return Response(b"", status_code=status, headers=headers)
        return _BlobResponse(reader, self._chunks(reader, start, end, digest), status_code=status, headers=headers)

    async def referrers(self, request: Request) -> Response:
        """The OCI index of the stored referrers of a manifest: empty when it has none (or is not stored:
        the spec allows either answer, and an empty list is what a client can always use)."""
        name, digest = request.path_params["name"], _digest_of(request)
        repository = await self._repository(request)
        if repository is None:
            raise errors.name_unknown(name)
        listed = repository.referrers.get(digest, ())
        wanted = request.query_params.getlist("artifactType")
        if wanted:
            listed = tuple(descriptor for descriptor in listed if descriptor.artifact_type in wanted)
        body = referrers_index(listed)
        headers = {
            "Content-Type": OCI_INDEX,
            "Content-Length": str(len(body)),
            API_VERSION_HEADER[0]: API_VERSION_HEADER[1],
        }
        if wanted:
            headers["OCI-Filters-Applied"] = "artifactType"
        return Response(b"" if request.method == "HEAD" else body, headers=headers)

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise errors.not_found()

    # Helpers

    async def _repository(self, request: Request) -> Repository | None:
        """The stored repository the request names (``None`` if the store has none by that name)."""
        try:
            stored = self.names.stored_name(request.path_params["name"], request.query_params.get("ns"))
        except InvalidName as error:
            raise errors.name_invalid(str(error)) from None
        catalog = await self._run(self.catalogs.current)
        return catalog.repositories.get(stored)

    async def _chunks(self, reader: BlobReader, start: int, end: int, digest: str) -> AsyncIterator[bytes]:
        """The bytes ``start``..``end`` of an open blob, a chunk at a time."""
        position = start
        while position < end:
            length = min(reader.chunk_size, end - position)
            try:
                chunk = await anyio.to_thread.run_sync(reader.read, position, length, limiter=self._limiter)
            except OSError as error:
                log.error("reading blob %s of %s failed: %s", digest, self.store, error)
                raise _ResponseAborted from None
            if not chunk:
                log.error("blob %s of %s ended at byte %d of %d", digest, self.store, position, reader.size)
                raise _ResponseAborted
            yield chunk
            position += len(chunk)


class _BlobResponse(StreamingResponse):
    """A streamed blob that closes its reader however the response ends: sent, failed, or cancelled by a
    client hanging up (possibly before the first chunk was read)."""

    def __init__(
        self, reader: BlobReader, chunks: AsyncIterator[bytes], status_code: int, headers: dict[str, str]
    ) -> None:
        super().__init__(chunks, status_code=status_code, headers=headers)
        self._reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._reader.close()


def _digest_of(request: Request) -> str:
    """The request's ``digest`` path parameter, validated (``DIGEST_INVALID`` otherwise)."""
    digest: str = request.path_params["digest"]
    try:
        validate_digest(digest)
    except InvalidDigest:
        raise errors.digest_invalid(digest) from None
    return digest


def _dump(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _json_response(request: Request, body: bytes, link: str | None = None) -> Response:
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        API_VERSION_HEADER[0]: API_VERSION_HEADER[1],
    }
    if link:
        headers["Link"] = link
    return Response(b"" if request.method == "HEAD" else body, headers=headers)


def _paginate(request: Request, items: list[str]) -> tuple[list[str], str | None]:
    """The page ``n`` and ``last`` ask for (items after ``last``, at most ``n``), and the ``Link`` to the next
    page when more follow. A ``n`` that is no number is ignored."""
    last = request.query_params.get("last")
    if last:
        items = items[bisect_right(items, last) :]
    limit_text = request.query_params.get("n", "")
    if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 9):
        return items, None
    limit = int(limit_text)
    page = items[:limit]
    if not page or len(items) <= limit:
        return page, None
    query = {"n": str(limit), "last": page[-1]}
    if "ns" in request.query_params:
        query["ns"] = request.query_params["ns"]
    return page, f'<{request.url.path}?{urlencode(query)}>; rel="next"'
