"""A read-only OCI distribution API over a store, so any registry client can pull from a mirror.

Images are found by the name they are stored under (``docker.io/library/alpine:3.20``). A request names
the registry the way clients do: containerd's mirror requests carry it as ``?ns=docker.io`` (so the
server can mirror registries with ports, too); otherwise a first path component with a dot is the
registry (``HOST:PORT/ghcr.io/org/app:1.0``), and anything else is Docker Hub, as Docker resolves names
(``HOST:PORT/library/alpine:3.20``). Content is addressed by digest as stored; nothing can be pushed.
Paths are never built from the request: digests are validated and names only looked up.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import closing
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import mediatypes
from .descriptor import Descriptor
from .digest import validate_digest
from .errors import InvalidDigest, NotFound
from .store import LayoutStore
from .store.layout import ref_name

log = logging.getLogger(__name__)

_ROUTE = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<reference>[^/]+)$")
_TAGS = re.compile(r"^/v2/(?P<name>.+)/tags/list$")
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")
_OCTET_STREAM = "application/octet-stream"


def stored_name(repository: str, namespace: str | None) -> str:
    """The name images of ``/v2/<repository>/`` are stored under, given containerd's ``ns`` parameter."""
    if namespace:
        return f"{namespace}/{repository}"
    first = repository.split("/", 1)[0]
    if "." in first or first == "localhost":
        return repository
    return f"docker.io/{repository}" if "/" in repository else f"docker.io/library/{repository}"


def _split(reference_name: str) -> tuple[str, str] | None:
    """``registry/repo:tag`` -> ``(registry/repo, tag)``; digest-only names are not browsable tags."""
    name, sep, tag = reference_name.rpartition(":")
    if not sep or "/" in tag or "@" in reference_name:
        return None
    return name, tag


class _Handler(BaseHTTPRequestHandler):
    server: RegistryServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    def do_GET(self) -> None:
        self._dispatch(body=True)

    def _dispatch(self, body: bool) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        try:
            if path in ("/v2", "/v2/"):
                return self._json({}, body)
            if path == "/v2/_catalog":
                return self._json({"repositories": sorted(self.server.tags())}, body)
            if match := _TAGS.match(path):
                name = stored_name(match["name"], query.get("ns", [None])[0])
                tags = self.server.tags().get(name)
                if tags is None:
                    return self._error(HTTPStatus.NOT_FOUND, "NAME_UNKNOWN", f"repository {name} not found")
                limit = query.get("n", [""])[0]
                listed = sorted(tags)[: int(limit)] if limit.isascii() and limit.isdigit() else sorted(tags)
                return self._json({"name": match["name"], "tags": listed}, body)
            if match := _ROUTE.match(path):
                if match["kind"] == "manifests":
                    name = stored_name(match["name"], query.get("ns", [None])[0])
                    return self._manifest(name, match["reference"], body)
                return self._blob(validate_digest(match["reference"]), body)
            self._error(HTTPStatus.NOT_FOUND, "NOT_FOUND", "no such endpoint")
        except InvalidDigest as error:
            self._error(HTTPStatus.BAD_REQUEST, "DIGEST_INVALID", str(error))
        except NotFound as error:
            self._error(HTTPStatus.NOT_FOUND, "BLOB_UNKNOWN", str(error))

    def _manifest(self, name: str, reference: str, body: bool) -> None:
        try:
            if reference.startswith(("sha256:", "sha512:")):
                digest = validate_digest(reference)
                size = self.server.store.info(digest)
                if size > mediatypes.MAX_DOCUMENT_SIZE:
                    raise NotFound(f"{digest} is not a manifest")
                content = self._read(Descriptor(media_type=_OCTET_STREAM, digest=digest, size=size))
                media_type = _sniff_media_type(content, digest)
            else:
                entry = self.server.store.resolve(f"{name}:{reference}")
                content, media_type, digest = self._read(entry), entry.media_type, entry.digest
        except NotFound as error:
            return self._error(HTTPStatus.NOT_FOUND, "MANIFEST_UNKNOWN", str(error))
        self._send(HTTPStatus.OK, content if body else b"", media_type, len(content), digest)

    def _read(self, descriptor: Descriptor) -> bytes:
        with closing(self.server.store.fetch(descriptor)) as chunks:
            return b"".join(chunks)

    def _blob(self, digest: str, body: bool) -> None:
        size = self.server.store.info(digest)
        descriptor = Descriptor(media_type=_OCTET_STREAM, digest=digest, size=size)
        start, end = 0, size - 1
        status = HTTPStatus.OK
        if (header := self.headers.get("Range")) and (match := _RANGE.match(header)):
            start = int(match["start"])
            end = min(int(match["end"]), size - 1) if match["end"] else size - 1
            if start > end:
                return self._error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "RANGE_INVALID", header)
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", _OCTET_STREAM)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Docker-Content-Digest", digest)
        self.send_header("Accept-Ranges", "bytes")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        remaining = end - start + 1
        with closing(self.server.store.fetch(descriptor, start)) as chunks:
            for chunk in chunks:
                self.wfile.write(chunk[:remaining])
                remaining -= len(chunk)
                if remaining <= 0:
                    break

    def _json(self, document: object, body: bool) -> None:
        content = json.dumps(document).encode()
        self._send(HTTPStatus.OK, content if body else b"", "application/json", len(content))

    def _error(self, status: HTTPStatus, code: str, message: str) -> None:
        content = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        self._send(status, content if self.command != "HEAD" else b"", "application/json", len(content))

    def _send(
        self, status: HTTPStatus, content: bytes, media_type: str, length: int, digest: str | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        if digest is not None:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        self.wfile.write(content)


def _sniff_media_type(content: bytes, digest: str) -> str:
    """A stored manifest's media type: its own ``mediaType``, else its shape (OCI allows omitting it).

    Blobs are stored side by side, so a config (JSON too) must be told from a manifest: anything that is
    not a schema 2 document with a manifest or index media type or shape is not one.
    """
    try:
        document = json.loads(content)
    except ValueError:
        document = None
    if not isinstance(document, dict) or document.get("schemaVersion") != 2:
        raise NotFound(f"{digest} is not a manifest")
    declared = document.get("mediaType")
    if isinstance(declared, str) and mediatypes.is_document(declared):
        return declared
    if declared is None and "manifests" in document:
        return mediatypes.OCI_INDEX
    if declared is None and "config" in document:
        return mediatypes.OCI_MANIFEST
    raise NotFound(f"{digest} is not a manifest")


class RegistryServer(ThreadingHTTPServer):
    """Serves ``store`` read-only over the distribution API until ``shutdown()``."""

    daemon_threads = True

    def __init__(self, store: LayoutStore, address: tuple[str, int] = ("127.0.0.1", 5000)) -> None:
        super().__init__(address, _Handler)
        self.store = store

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]  # an IPv4 (host, port), never bytes as server_address may be
        return f"http://{host}:{port}"

    def tags(self) -> dict[str, set[str]]:
        """Repository name -> tags, from index.json (read per request, so new syncs show at once)."""
        repositories: dict[str, set[str]] = {}
        for entry in self.store.images():
            if split := _split(ref_name(entry) or ""):
                repositories.setdefault(split[0], set()).add(split[1])
        return repositories
