"""The registry client: resolve references to descriptors, list tags and repositories, hand out fetchers.

One :class:`Registry` serves every host a sync touches. What it shares with its fetchers (per-host
settings, transports, mirrors-then-registry, redirects) is :class:`~.hosts.RegistryHosts`; this module adds
what only a resolver does: reading references, tag lists and catalogs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urljoin

import requests
from urllib3.util.retry import Retry

from .. import mediatypes
from ..descriptor import Descriptor
from ..digest import digest_bytes, validate_digest
from ..errors import (
    DigestMismatch,
    DocumentTooLarge,
    InvalidDigest,
    InvalidManifest,
    PermanentError,
    TransientError,
    UnsupportedSchema1,
)
from .auth import repository_scope
from .config import RegistryConfig
from .fetcher import CHUNK_SIZE, RegistryFetcher
from .hosts import Endpoint, RegistryHosts, first_available
from .policy import Address, addresses_of, content_length, origin_of
from .reference import Reference
from .transport import DEFAULT_TIMEOUT

log = logging.getLogger(__name__)


class Registry:
    """Pull-side access to OCI distribution registries, configured per host.

    ``configs`` maps registry hosts (``docker.io``, ``127.0.0.1:5000``, a mirror's host) to settings; hosts
    without an entry get ``default_config`` (by default: HTTPS with verification, credentials from the
    environment or Docker's config.json). ``allow_foreign_urls`` lets fetchers read non-distributable
    layers from their ``urls``. ``address_lookup`` resolves ``host[:port]`` for the redirect rule (see
    :meth:`.hosts.RegistryHosts.leads_inward`).
    Use as a context manager, or call :meth:`close`, to release pooled connections.
    """

    def __init__(
        self,
        configs: Mapping[str, RegistryConfig] | None = None,
        *,
        default_config: RegistryConfig | None = None,
        allow_foreign_urls: bool = False,
        retry: Retry | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        environ: Mapping[str, str] | None = None,
        docker_config: Path | None = None,
        address_lookup: Callable[[str], Sequence[Address]] = addresses_of,
    ) -> None:
        self.hosts = RegistryHosts(
            configs,
            default_config=default_config,
            retry=retry,
            timeout=timeout,
            environ=environ,
            docker_config=docker_config,
            address_lookup=address_lookup,
        )
        self.allow_foreign_urls = allow_foreign_urls

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection."""
        self.hosts.close()

    def resolve(self, ref: Reference) -> Descriptor:
        """The descriptor of the manifest or index ``ref`` points at.

        Asks with HEAD and trusts ``Docker-Content-Digest``, ``Content-Length`` and ``Content-Type`` when
        all are present; otherwise GETs the document (at most 4 MiB) and hashes it. A digest reference is
        verified against what the registry says or sends.
        """
        return first_available(self.hosts.endpoints(ref.registry), lambda endpoint: self._resolve_at(endpoint, ref))

    def _resolve_at(self, endpoint: Endpoint, ref: Reference) -> Descriptor:
        subject = f"{endpoint.describe()} repository {ref.repository} reference {ref.object}"
        url = endpoint.url(f"/v2/{ref.repository}/manifests/{ref.object}")
        headers = {"Accept": ", ".join(mediatypes.MANIFEST_ACCEPT)}
        scope = repository_scope(ref.repository)
        with self.hosts.request("HEAD", url, subject=subject, scope=scope, headers=headers) as response:
            descriptor = _descriptor_from_headers(response.headers, ref, subject)
        if descriptor is not None:
            return descriptor
        with self.hosts.request("GET", url, subject=subject, scope=scope, headers=headers) as response:
            return _descriptor_from_body(response, ref, subject)

    def fetcher(self, ref: Reference) -> RegistryFetcher:
        """A :class:`~ocimirror.content.Fetcher` for the content of ``ref``'s repository."""
        return RegistryFetcher(self.hosts, ref, allow_foreign_urls=self.allow_foreign_urls)

    def tags(self, ref: Reference, page_size: int | None = None) -> list[str]:
        """Every tag of ``ref``'s repository, following ``Link`` pagination (``page_size`` per page).

        Asked from the registry itself, never a mirror: a mirror's tag list may be stale.
        """
        endpoint = self.hosts.upstream(ref.registry)
        subject = f"{endpoint.describe()} repository {ref.repository} tag list"
        params = {"n": str(page_size)} if page_size else {}
        url = endpoint.url(f"/v2/{ref.repository}/tags/list", **params)
        pages = self._pages(url, subject, repository_scope(ref.repository))
        return [tag for page in pages for tag in _string_list(page, "tags", subject)]

    def catalog(self, registry: str, page_size: int | None = None) -> list[str]:
        """Every repository of ``registry`` (``/v2/_catalog``), following pagination."""
        endpoint = self.hosts.upstream(registry)
        subject = f"{endpoint.describe()} catalog"
        params = {"n": str(page_size)} if page_size else {}
        pages = self._pages(endpoint.url("/v2/_catalog", **params), subject, "registry:catalog:*")
        return [name for page in pages for name in _string_list(page, "repositories", subject)]

    def _pages(self, url: str, subject: str, scope: str) -> Iterator[dict[str, object]]:
        origin = origin_of(url)
        while url:
            headers = {"Accept": "application/json"}
            with self.hosts.request("GET", url, subject=subject, scope=scope, headers=headers) as response:
                body = _read_json(response, subject)
                link = response.links.get("next", {}).get("url")
            yield body
            url = urljoin(url, link) if link else ""
            if url and origin_of(url) != origin:
                raise PermanentError(f"{subject}: pagination link leaves {origin}")


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip()


def _descriptor_from_headers(headers: Mapping[str, str], ref: Reference, subject: str) -> Descriptor | None:
    """The descriptor a HEAD answer describes, or ``None`` when it says too little to be trusted."""
    media_type = _media_type(headers.get("Content-Type"))
    if mediatypes.is_schema1(media_type):
        raise UnsupportedSchema1(f"{subject}: Docker schema 1 manifests ({media_type}) are not supported")
    digest, length = headers.get("Docker-Content-Digest"), content_length(headers)
    if not (digest and length is not None and mediatypes.is_document(media_type)):
        return None
    try:
        validate_digest(digest)
    except InvalidDigest:
        return None
    if ref.digest is not None and digest != ref.digest:
        if digest.partition(":")[0] == ref.digest.partition(":")[0]:
            raise DigestMismatch(f"{subject}: the registry reports digest {digest}")
        return None  # another algorithm: hash the body to compare
    if length > mediatypes.MAX_DOCUMENT_SIZE:
        raise DocumentTooLarge(f"{subject}: {length} bytes exceeds the {mediatypes.MAX_DOCUMENT_SIZE} byte limit")
    return Descriptor(media_type=media_type, digest=digest, size=length)


def _descriptor_from_body(response: requests.Response, ref: Reference, subject: str) -> Descriptor:
    """Read (at most 4 MiB of) the document and describe it by its own hash."""
    body = _read_capped(response, mediatypes.MAX_DOCUMENT_SIZE, subject)
    algorithm = ref.digest.partition(":")[0] if ref.digest else "sha256"
    digest = digest_bytes(body, algorithm)
    if ref.digest is not None and digest != ref.digest:
        raise DigestMismatch(f"{subject}: the manifest hashes to {digest}")
    reported = response.headers.get("Docker-Content-Digest")
    if reported and reported.partition(":")[0] == algorithm and reported != digest:
        raise DigestMismatch(f"{subject}: the registry reports {reported} but the manifest hashes to {digest}")
    media_type = _media_type(response.headers.get("Content-Type"))
    if not mediatypes.is_document(media_type):
        media_type = _declared_media_type(body, subject)
    if mediatypes.is_schema1(media_type):
        raise UnsupportedSchema1(f"{subject}: Docker schema 1 manifests ({media_type}) are not supported")
    return Descriptor(media_type=media_type, digest=digest, size=len(body))


def _declared_media_type(body: bytes, subject: str) -> str:
    """The ``mediaType`` a document declares itself, for registries that send a generic Content-Type."""
    try:
        declared = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    if not isinstance(declared, str) or not (mediatypes.is_document(declared) or mediatypes.is_schema1(declared)):
        raise InvalidManifest(f"{subject}: neither Content-Type nor the body names a manifest or index media type")
    return declared


def _read_capped(response: requests.Response, limit: int, subject: str) -> bytes:
    parts: list[bytes] = []
    total = 0
    try:
        for chunk in response.iter_content(CHUNK_SIZE):
            total += len(chunk)
            if total > limit:
                raise DocumentTooLarge(f"{subject}: larger than the {limit} byte limit")
            parts.append(chunk)
    except requests.RequestException as error:
        raise TransientError(f"{subject}: body broken: {type(error).__name__}") from None
    return b"".join(parts)


def _read_json(response: requests.Response, subject: str) -> dict[str, object]:
    try:
        body = json.loads(_read_capped(response, mediatypes.MAX_DOCUMENT_SIZE, subject))
    except ValueError:
        raise PermanentError(f"{subject}: the answer is not JSON") from None
    if not isinstance(body, dict):
        raise PermanentError(f"{subject}: the answer is not a JSON object")
    return body


def _string_list(body: dict[str, object], key: str, subject: str) -> list[str]:
    values = body.get(key) or []
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise PermanentError(f"{subject}: {key!r} is not a list of strings")
    return values
