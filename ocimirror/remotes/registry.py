"""The registry client: resolve references to descriptors, list tags and repositories, hand out fetchers.

One :class:`Registry` serves every host a sync touches. It keeps one :class:`~.transport.HostTransport`
(connection pool, TLS settings, credentials) per endpoint host, tries a registry's mirrors in order before
the registry itself, and follows redirects by hand so that ``Authorization`` only ever goes to the host
that asked for it (blob storage behind a redirect gets a presigned URL, not the user's token).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

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
    NotFound,
    PermanentError,
    TransientError,
    UnsupportedSchema1,
)
from .auth import repository_scope
from .config import RegistryConfig
from .credentials import lookup_credentials
from .fetcher import CHUNK_SIZE, RegistryFetcher
from .policy import content_length, is_loopback_host, make_retry, origin_of, raise_for_status
from .reference import DOCKER_HUB, DOCKER_HUB_ALIASES, DOCKER_HUB_API_HOST, Reference
from .transport import DEFAULT_TIMEOUT, HostTransport

log = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    """A place a registry's content can be read from: a mirror or the registry itself."""

    origin: str
    registry: str
    is_mirror: bool

    def url(self, path: str, **params: str) -> str:
        """The URL of API ``path``; mirrors also get ``ns=<registry>`` so one mirror can serve many."""
        if self.is_mirror:
            params = {"ns": self.registry, **params}
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.origin}{path}{query}"

    def describe(self) -> str:
        """Words for error messages: which registry, and through which mirror."""
        via = f" via mirror {self.origin}" if self.is_mirror else ""
        return f"registry {self.registry}{via}"


class Registry:
    """Pull-side access to OCI distribution registries, configured per host.

    ``configs`` maps registry hosts (``docker.io``, ``127.0.0.1:5000``, a mirror's host) to settings; hosts
    without an entry get ``default_config`` (by default: HTTPS with verification, credentials from the
    environment or Docker's config.json). ``allow_foreign_urls`` lets fetchers read non-distributable
    layers from their ``urls``.
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
    ) -> None:
        self.configs = dict(configs or {})
        self.default_config = default_config or RegistryConfig()
        self.allow_foreign_urls = allow_foreign_urls
        self.retry = retry if retry is not None else make_retry()
        self.timeout = timeout
        self._environ = environ
        self._docker_config = docker_config
        self._transports: dict[str, HostTransport] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            transport.close()

    def config_for(self, host: str) -> RegistryConfig:
        """The settings of ``host`` (Docker Hub's API host shares ``docker.io``'s), defaults if none."""
        if host.lower() in DOCKER_HUB_ALIASES:
            host = DOCKER_HUB
        return self.configs.get(host) or self.default_config

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        """Where ``ref``'s content is read from, in order: the registry's mirrors, then the registry.

        The registry itself is reached over HTTPS, except loopback hosts and hosts marked ``insecure``
        that have no ``ca_bundle``: those use plain HTTP. (A ``ca_bundle`` says the host speaks TLS; to reach
        an insecure host over HTTPS without verification, list ``https://host`` as its first mirror.)
        """
        mirrors = [Endpoint(origin, ref.registry, is_mirror=True) for origin in self.config_for(ref.registry).mirrors]
        return [*mirrors, self.upstream(ref.registry)]

    def upstream(self, registry: str) -> Endpoint:
        """The registry's own endpoint (see :meth:`endpoints` for the scheme)."""
        config = self.config_for(registry)
        api_host = DOCKER_HUB_API_HOST if registry == DOCKER_HUB else registry
        plain = (config.insecure or is_loopback_host(api_host)) and config.ca_bundle is None
        return Endpoint(f"{'http' if plain else 'https'}://{api_host}", registry, is_mirror=False)

    def transport(self, origin: str) -> HostTransport:
        """The transport for ``scheme://host[:port]``, created on first use."""
        with self._lock:
            transport = self._transports.get(origin)
            if transport is None:
                host = urlsplit(origin).netloc
                config = self.config_for(host)
                transport = HostTransport(
                    origin,
                    config,
                    lambda: lookup_credentials(host, config, self._environ, self._docker_config),
                    default_ca_bundle=self._default_ca_bundle(),
                    retry=self.retry,
                    timeout=self.timeout,
                )
                self._transports[origin] = transport
            return transport

    def _default_ca_bundle(self) -> str | None:
        """``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``: honoured as requests does, though sessions here
        ignore the rest of the environment (``~/.netrc`` must never add credentials)."""
        environ = os.environ if self._environ is None else self._environ
        return environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or None

    def request(
        self,
        method: str,
        url: str,
        *,
        subject: str,
        scope: str | None = None,
        authenticate: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send a request, follow redirects, and return the successful (streamed) response.

        Credentials go only to ``url``'s own origin: a redirect to another origin is followed without
        them. Error statuses become typed errors naming ``subject``.
        """
        origin = origin_of(url)
        response = self.transport(origin).send(
            method, url, subject=subject, scope=scope, authenticate=authenticate, headers=headers
        )
        for _ in range(MAX_REDIRECTS):
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                break
            response.close()
            url = urljoin(url, location)
            same_origin = origin_of(url) == origin
            log.debug("%s: redirected to %s", subject, origin_of(url))
            response = self.transport(origin_of(url)).send(
                method,
                url,
                subject=subject,
                scope=scope if same_origin else None,
                authenticate=authenticate and same_origin,
                headers=headers,
            )
        else:
            response.close()
            raise PermanentError(f"{subject}: more than {MAX_REDIRECTS} redirects")
        raise_for_status(response, subject)
        return response

    def with_fallback(self, ref: Reference, attempt: Callable[[Endpoint], T]) -> T:
        """Run ``attempt`` on each endpoint of ``ref`` in order until one succeeds.

        A mirror that does not have the content (404) or is failing (5xx, resets, timeouts) is skipped;
        refused credentials and invalid content are final. The registry's own error is raised last.
        """
        endpoints = self.endpoints(ref)
        for endpoint in endpoints[:-1]:
            try:
                return attempt(endpoint)
            except (NotFound, TransientError) as error:
                log.info("%s; falling back to the next endpoint", error)
        return attempt(endpoints[-1])

    def resolve(self, ref: Reference) -> Descriptor:
        """The descriptor of the manifest or index ``ref`` points at.

        Asks with HEAD and trusts ``Docker-Content-Digest``, ``Content-Length`` and ``Content-Type`` when
        all are present; otherwise GETs the document (at most 4 MiB) and hashes it. A digest reference is
        verified against what the registry says or sends.
        """
        return self.with_fallback(ref, lambda endpoint: self._resolve_at(endpoint, ref))

    def _resolve_at(self, endpoint: Endpoint, ref: Reference) -> Descriptor:
        subject = f"{endpoint.describe()} repository {ref.repository} reference {ref.object}"
        url = endpoint.url(f"/v2/{ref.repository}/manifests/{ref.object}")
        headers = {"Accept": ", ".join(mediatypes.MANIFEST_ACCEPT)}
        scope = repository_scope(ref.repository)
        with self.request("HEAD", url, subject=subject, scope=scope, headers=headers) as response:
            descriptor = _descriptor_from_headers(response.headers, ref, subject)
        if descriptor is not None:
            return descriptor
        with self.request("GET", url, subject=subject, scope=scope, headers=headers) as response:
            return _descriptor_from_body(response, ref, subject)

    def fetcher(self, ref: Reference) -> RegistryFetcher:
        """A :class:`~ocimirror.content.Fetcher` for the content of ``ref``'s repository."""
        return RegistryFetcher(self, ref, allow_foreign_urls=self.allow_foreign_urls)

    def tags(self, ref: Reference, page_size: int | None = None) -> list[str]:
        """Every tag of ``ref``'s repository, following ``Link`` pagination (``page_size`` per page).

        Asked from the registry itself, never a mirror: a mirror's tag list may be stale.
        """
        endpoint = self.upstream(ref.registry)
        subject = f"{endpoint.describe()} repository {ref.repository} tag list"
        params = {"n": str(page_size)} if page_size else {}
        url = endpoint.url(f"/v2/{ref.repository}/tags/list", **params)
        pages = self._pages(url, subject, repository_scope(ref.repository))
        return [tag for page in pages for tag in _string_list(page, "tags", subject)]

    def catalog(self, registry: str, page_size: int | None = None) -> list[str]:
        """Every repository of ``registry`` (``/v2/_catalog``), following pagination."""
        endpoint = self.upstream(registry)
        subject = f"{endpoint.describe()} catalog"
        params = {"n": str(page_size)} if page_size else {}
        pages = self._pages(endpoint.url("/v2/_catalog", **params), subject, "registry:catalog:*")
        return [name for page in pages for name in _string_list(page, "repositories", subject)]

    def _pages(self, url: str, subject: str, scope: str) -> Iterator[dict[str, object]]:
        origin = origin_of(url)
        while url:
            headers = {"Accept": "application/json"}
            with self.request("GET", url, subject=subject, scope=scope, headers=headers) as response:
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
