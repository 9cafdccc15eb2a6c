"""The registry client: resolve references to descriptors, list tags and repositories, hand out fetchers.

One :class:`Registry` serves every host a sync touches. What it shares with its fetchers (per-host
settings, transports, mirrors-then-registry, redirects) is :class:`~.hosts.RegistryHosts`; this module adds
what only a resolver does: reading references, tag lists and catalogs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from pydantic import ValidationError
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
    validation_problems,
)
from ..jsonlimits import decode_json
from .auth import repository_scope
from .budget import RequestBudget
from .config import RegistryConfig
from .fetcher import CHUNK_SIZE, RegistryFetcher
from .hosts import Endpoint, RegistryHosts, first_available
from .policy import Address, addresses_of, content_length, origin_of
from .reference import Reference
from .transport import DEFAULT_TIMEOUT

log = logging.getLogger(__name__)

#: Most pages one tag list or catalog follows. Registries page 100 (Docker Hub, distribution's default) to
#: 1,000 (ECR) entries at a time, so 10,000 pages carry a full ``MAX_LIST_ENTRIES`` at the smallest usual
#: page size, while a registry that links on without end (one entry or none a page) is stopped in minutes.
MAX_LIST_PAGES = 10_000
#: Most entries (tags or repositories) one list returns. The biggest real repositories hold tens of
#: thousands of tags (CI builds tagged per commit); a million is ten times beyond them and still only about
#: 100 MB of strings, the most one listing should cost a mirror.
MAX_LIST_ENTRIES = 1_000_000
#: Most pages of one referrers listing. A page holds as many descriptors as the registry likes (hundreds
#: typically); a subject with more than a hundred pages of signatures and SBOMs is a registry linking on.
MAX_REFERRER_PAGES = 100


class Registry:
    """Pull-side access to OCI distribution registries, configured per host.

    ``configs`` maps registry hosts (``docker.io``, ``127.0.0.1:5000``, a mirror's host) to settings; hosts
    without an entry get ``default_config`` (by default: HTTPS with verification, credentials from the
    environment or Docker's config.json). ``allow_foreign_urls`` lets fetchers read non-distributable
    layers from their ``urls``. ``address_lookup`` resolves ``host[:port]`` for the redirect rule (see
    :meth:`.hosts.RegistryHosts.leads_inward`). ``max_list_pages`` and ``max_list_entries`` bound tag lists
    and catalogs, ``max_referrer_pages`` a referrers listing (see the constants of the same names).
    ``budget`` admits requests to hosts with limits (see :mod:`.budget`).
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
        max_list_pages: int = MAX_LIST_PAGES,
        max_list_entries: int = MAX_LIST_ENTRIES,
        max_referrer_pages: int = MAX_REFERRER_PAGES,
        budget: RequestBudget | None = None,
    ) -> None:
        self.hosts = RegistryHosts(
            configs,
            default_config=default_config,
            retry=retry,
            timeout=timeout,
            environ=environ,
            docker_config=docker_config,
            address_lookup=address_lookup,
            budget=budget,
        )
        self.allow_foreign_urls = allow_foreign_urls
        self.max_list_pages = max_list_pages
        self.max_list_entries = max_list_entries
        self.max_referrer_pages = max_referrer_pages

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
        with self.hosts.transfer(ref.registry):
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

        Asked from the registry itself, never a mirror: a mirror's tag list may be stale. Bounded by
        ``max_list_pages`` and ``max_list_entries``.
        """
        endpoint = self.hosts.upstream(ref.registry)
        subject = f"{endpoint.describe()} repository {ref.repository} tag list"
        params = {"n": str(page_size)} if page_size else {}
        url = endpoint.url(f"/v2/{ref.repository}/tags/list", **params)
        return self._list(url, subject, repository_scope(ref.repository), "tags")

    def catalog(self, registry: str, page_size: int | None = None) -> list[str]:
        """Every repository of ``registry`` (``/v2/_catalog``), following pagination, bounded as :meth:`tags`."""
        endpoint = self.hosts.upstream(registry)
        subject = f"{endpoint.describe()} catalog"
        params = {"n": str(page_size)} if page_size else {}
        return self._list(endpoint.url("/v2/_catalog", **params), subject, "registry:catalog:*", "repositories")

    def referrers(self, ref: Reference, digest: str, artifact_type: str | None = None) -> tuple[list[Descriptor], bool]:
        """The descriptors the OCI 1.1 referrers API lists for ``digest`` in ``ref``'s repository, every page
        followed (at most ``max_referrer_pages``), and whether the registry applied the ``artifact_type``
        filter (``OCI-Filters-Applied``): if not, the caller filters. ``NotFound`` when the registry has no
        referrers API (distribution 2.x answers 404): the caller falls back to the tag schema.

        Entries that are not descriptors are an error naming the registry; what they point at is the
        caller's to check (a listing is only a claim: the referrer's own ``subject`` decides).
        """
        validate_digest(digest)
        endpoint = self.hosts.upstream(ref.registry)
        subject = f"{endpoint.describe()} repository {ref.repository} referrers of {digest}"
        params = {"artifactType": artifact_type} if artifact_type else {}
        url = endpoint.url(f"/v2/{ref.repository}/referrers/{digest}", **params)
        accept = f"{mediatypes.OCI_INDEX}, application/json"
        found: list[Descriptor] = []
        filtered = True
        pages = self._pages(url, subject, repository_scope(ref.repository), accept, self.max_referrer_pages)
        for body, headers in pages:
            applied = {part.strip() for part in headers.get("OCI-Filters-Applied", "").split(",")}
            filtered = filtered and "artifactType" in applied
            manifests = body.get("manifests") or []
            if not isinstance(manifests, list):
                raise PermanentError(f"{subject}: 'manifests' is not a list")
            try:
                found += [Descriptor.model_validate(entry) for entry in manifests]
            except ValidationError as error:
                problem = validation_problems(error, 1)[0]
                raise PermanentError(f"{subject}: not a list of descriptors: {problem}") from None
            if len(found) > self.max_list_entries:
                raise PermanentError(f"{subject}: more than {self.max_list_entries} entries")
        return found, bool(artifact_type) and filtered

    def _list(self, url: str, subject: str, scope: str, key: str) -> list[str]:
        """The ``key`` strings of every page from ``url`` on (bounded by ``max_list_pages`` and
        ``max_list_entries``)."""
        entries: list[str] = []
        for body, _ in self._pages(url, subject, scope, "application/json", self.max_list_pages):
            entries += _string_list(body, key, subject)
            if len(entries) > self.max_list_entries:
                raise PermanentError(f"{subject}: more than {self.max_list_entries} entries")
        return entries

    def _pages(
        self, url: str, subject: str, scope: str, accept: str, max_pages: int
    ) -> Iterator[tuple[dict[str, object], Mapping[str, str]]]:
        """Every page (JSON object and headers) from ``url`` on, following ``Link: <...>; rel="next"``. A
        registry decides whether there is a next page, so the pages are bounded here: a ``Link`` that never
        stops, leaves the registry, or leads back to a page already read, is an error naming the registry,
        not a sync that never ends."""
        origin = origin_of(url)
        read: set[str] = set()
        while url:
            if len(read) == max_pages:
                raise PermanentError(f"{subject}: more than {max_pages} pages; the registry keeps linking on")
            read.add(url)
            headers = {"Accept": accept}
            with (
                self.hosts.transfer(urlsplit(url).netloc),  # a page is a transfer of the registry's content
                self.hosts.request("GET", url, subject=subject, scope=scope, headers=headers) as response,
            ):
                body = _read_json(response, subject)
                link = response.links.get("next", {}).get("url")
                page_headers = response.headers
            yield body, page_headers
            url = urljoin(url, link) if link else ""
            if url and origin_of(url) != origin:
                raise PermanentError(f"{subject}: pagination link leaves {origin}")
            if url in read:
                raise PermanentError(f"{subject}: the next-page link leads back to a page already read")


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
        declared = decode_json(body).get("mediaType")
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
        body = decode_json(_read_capped(response, mediatypes.MAX_DOCUMENT_SIZE, subject))
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
