"""Streaming content out of a registry, resuming broken downloads where they stopped.

Big layers over long links break: connections reset, proxies cut bodies. The fetcher keeps its position
and reconnects with ``Range: bytes=<position>-``; a server that ignores Range and sends the whole body
again has the already-delivered prefix discarded. Each retry without progress uses up the registry's
retry budget (urllib3's ``Retry``, with its backoff and jitter); any progress restores it. The declared
size is a hard ceiling: a server sending more is an error, never a bigger blob.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import MaxRetryError, ProtocolError
from urllib3.util.retry import Retry

from .. import mediatypes
from ..descriptor import Descriptor
from ..errors import ConfigError, PermanentError, SizeMismatch, TransientError
from .auth import repository_scope
from .hosts import RegistryHosts, first_available
from .policy import check_plain_http, content_length, origin_of
from .reference import Reference

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class Source:
    """One URL the content may come from, and whether the repository's credentials go with it."""

    url: str
    subject: str
    authenticate: bool


class RegistryFetcher:
    """A :class:`~ocimirror.content.Fetcher` over one repository of a registry (and its mirrors).

    Manifests and indexes come from ``/manifests/<digest>``, everything else from ``/blobs/<digest>``.
    Non-distributable layers are read from their ``urls`` first only when ``allow_foreign_urls`` is set;
    those requests never carry the registry's credentials, and a URL a public registry's manifest points
    into private, loopback or link-local addresses is skipped, as such a redirect would be refused.
    """

    def __init__(
        self, hosts: RegistryHosts, ref: Reference, *, allow_foreign_urls: bool = False, chunk_size: int = CHUNK_SIZE
    ) -> None:
        self.hosts = hosts
        self.ref = ref
        self.allow_foreign_urls = allow_foreign_urls
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        return f"RegistryFetcher({str(self.ref)!r})"

    def __str__(self) -> str:
        """Where content comes from, for messages about it: ``registry HOST repository NAME``."""
        return f"registry {self.ref.registry} repository {self.ref.repository}"

    def fetch(self, descriptor: Descriptor, offset: int = 0) -> Generator[bytes, None, None]:
        """Yield ``descriptor``'s content from ``offset``; never more than ``descriptor.size`` in total."""
        if not 0 <= offset <= descriptor.size:
            raise PermanentError(f"offset {offset} is outside {descriptor.digest} of {descriptor.size} bytes")
        if offset == descriptor.size:
            return _nothing()  # nothing left; a Range from the end would be answered 416
        return self._stream(descriptor, offset)

    def sources(self, descriptor: Descriptor) -> list[Source]:
        """Where ``descriptor`` may be read, in order: allowed foreign URLs, mirrors, the registry."""
        endpoints = self.hosts.endpoints(self.ref.registry)
        found: list[Source] = []
        if self.allow_foreign_urls:
            for url in descriptor.urls or []:
                subject = f"foreign URL {origin_of(url)} for {descriptor.digest}"
                try:
                    check_plain_http(url, self.hosts.config_for(urlsplit(url).netloc).insecure, what=subject)
                except ConfigError as refused:
                    # The manifest, not the user, chose this URL: a refused one is no source, not a failure.
                    log.info("%s; skipped", refused)
                    continue
                if self.hosts.leads_inward(endpoints[-1].origin, url):
                    log.info("%s: leads from a public registry into a private network; skipped", subject)
                    continue
                found.append(Source(url, subject, False))
        kind = "manifests" if mediatypes.is_document(descriptor.media_type) else "blobs"
        for endpoint in endpoints:
            url = endpoint.url(f"/v2/{self.ref.repository}/{kind}/{descriptor.digest}")
            subject = f"{endpoint.describe()} repository {self.ref.repository} {kind[:-1]} {descriptor.digest}"
            found.append(Source(url, subject, True))
        return found

    def _stream(self, descriptor: Descriptor, offset: int) -> Generator[bytes, None, None]:
        with self.hosts.transfer(self.ref.registry):
            yield from self._transfer(descriptor, offset)

    def _transfer(self, descriptor: Descriptor, offset: int) -> Generator[bytes, None, None]:
        source, response, skip = self._open_first(descriptor, offset)
        position = offset
        template = self.hosts.retry
        retry = template
        try:
            while True:
                start = position
                try:
                    for chunk in response.iter_content(self.chunk_size):
                        if skip:
                            dropped = min(skip, len(chunk))
                            skip -= dropped
                            chunk = chunk[dropped:]
                            if not chunk:
                                continue
                        if position + len(chunk) > descriptor.size:
                            raise SizeMismatch(
                                f"{source.subject}: the server sends more than the declared {descriptor.size} bytes"
                            )
                        position += len(chunk)
                        yield chunk
                    if position == descriptor.size:
                        return
                    problem = f"body ended after {position} of {descriptor.size} bytes"
                except requests.RequestException as error:
                    problem = f"body broken after {position} of {descriptor.size} bytes ({type(error).__name__})"
                response.close()
                retry = self._count_failure(template if position > start else retry, source, problem)
                retry.sleep()
                log.info("%s: %s; resuming at byte %d", source.subject, problem, position)
                response, skip = self._open(source, descriptor, position)
        finally:
            response.close()

    def _count_failure(self, retry: Retry, source: Source, problem: str) -> Retry:
        """Spend one retry of the budget, or raise TransientError once it is used up without progress."""
        try:
            return retry.increment(method="GET", url=source.url, error=ProtocolError(problem))
        except MaxRetryError:
            raise TransientError(f"{source.subject}: {problem}; giving up after repeated failures") from None

    def _open_first(self, descriptor: Descriptor, offset: int) -> tuple[Source, requests.Response, int]:
        """Open the first source that has the content; skip those that 404 or keep failing."""
        return first_available(
            self.sources(descriptor), lambda source: (source, *self._open(source, descriptor, offset))
        )

    def _open(self, source: Source, descriptor: Descriptor, position: int) -> tuple[requests.Response, int]:
        """GET the content from ``position``; return the response and how many leading bytes to discard."""
        headers = {"Accept-Encoding": "identity"}
        if mediatypes.is_document(descriptor.media_type):
            headers["Accept"] = ", ".join(dict.fromkeys((descriptor.media_type, *mediatypes.MANIFEST_ACCEPT)))
        if position:
            headers["Range"] = f"bytes={position}-"
        response = self.hosts.request(
            "GET",
            source.url,
            subject=source.subject,
            scope=repository_scope(self.ref.repository) if source.authenticate else None,
            authenticate=source.authenticate,
            headers=headers,
        )
        try:
            skip, remaining = self._check_answer(response, source, descriptor, position)
        except BaseException:
            response.close()
            raise
        length = content_length(response.headers)
        if length is not None and length > remaining:
            response.close()
            raise SizeMismatch(
                f"{source.subject}: the server announces {length} bytes, more than the declared "
                f"{descriptor.size} bytes allow"
            )
        return response, skip

    @staticmethod
    def _check_answer(
        response: requests.Response, source: Source, descriptor: Descriptor, position: int
    ) -> tuple[int, int]:
        """``(bytes to skip, bytes the body may hold)`` for a 200 or 206 answer to a request from ``position``."""
        if response.status_code == 200:
            return position, descriptor.size
        if response.status_code == 206 and position:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != position:
                raise PermanentError(
                    f"{source.subject}: asked for bytes from {position}, got range "
                    f"{response.headers.get('Content-Range')!r}"
                )
            return 0, descriptor.size - position
        raise PermanentError(f"{source.subject}: unexpected HTTP {response.status_code}", status=response.status_code)


def _nothing() -> Generator[bytes, None, None]:
    """An empty stream that callers close like any other (``iter(())`` has no ``close``)."""
    yield from ()
