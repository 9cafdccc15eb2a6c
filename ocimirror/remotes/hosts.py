"""The hosts behind one registry name, and how each is reached: the base the resolver and the fetcher share.

containerd's ``core/remotes/docker`` gives its resolver and fetcher one ``dockerBase`` (the registry's hosts,
tried in order, each with its own client and authorizer); :class:`RegistryHosts` is that base here. It
knows each host's settings, lists a registry's endpoints (mirrors first, then the registry), keeps one
:class:`~.transport.HostTransport` (connection pool, TLS, credentials) per endpoint, and sends requests,
following redirects by hand so that ``Authorization`` only ever goes to the host that asked for it and a
public registry cannot send the client into the private network. :func:`first_available` is the one place
where "try the next endpoint" is decided.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

import requests
from urllib3.util.retry import Retry

from ..errors import NotFound, PermanentError, TransientError
from .budget import RequestBudget, Unlimited
from .config import RegistryConfig
from .credentials import lookup_credentials
from .policy import (
    Address,
    addresses_of,
    is_loopback_host,
    make_retry,
    origin_of,
    raise_for_status,
    redirect_allowed,
)
from .reference import DOCKER_HUB, DOCKER_HUB_ALIASES, DOCKER_HUB_API_HOST
from .transport import DEFAULT_TIMEOUT, HostTransport

log = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
C = TypeVar("C")
R = TypeVar("R")


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


def first_available(candidates: Sequence[C], attempt: Callable[[C], R]) -> R:
    """Run ``attempt`` on each candidate in order until one succeeds.

    A candidate that does not have the content (404) or is failing (5xx, resets, timeouts, retries used up)
    is skipped; refused credentials and invalid content are final. The last candidate's error is raised:
    it is the registry itself, whose answer is the one that counts.
    """
    for candidate in candidates[:-1]:
        try:
            return attempt(candidate)
        except (NotFound, TransientError) as error:
            log.info("%s; trying the next source", error)
    return attempt(candidates[-1])


def settings_key(host: str) -> str:
    """The key of ``host``'s settings and budget: Docker Hub's spellings and API host are ``docker.io``."""
    return DOCKER_HUB if host.lower() in DOCKER_HUB_ALIASES else host


class RegistryHosts:
    """Settings, endpoints and transports of every registry host a client talks to.

    ``configs`` maps hosts (``docker.io``, ``127.0.0.1:5000``, a mirror's host) to settings; other hosts get
    ``default_config``. ``address_lookup`` turns ``host[:port]`` into its IP addresses for the redirect
    rule (see :meth:`leads_inward`); it defaults to the system resolver. ``budget`` admits requests and
    transfers to hosts whose settings limit them (``max_requests_per_second``, ``max_parallel_fetches``).
    """

    def __init__(
        self,
        configs: Mapping[str, RegistryConfig] | None = None,
        *,
        default_config: RegistryConfig | None = None,
        retry: Retry | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        environ: Mapping[str, str] | None = None,
        docker_config: Path | None = None,
        address_lookup: Callable[[str], Sequence[Address]] = addresses_of,
        budget: RequestBudget | None = None,
    ) -> None:
        self.configs = dict(configs or {})
        self.budget: RequestBudget = budget or Unlimited()
        self.default_config = default_config or RegistryConfig()
        self.retry = retry if retry is not None else make_retry()
        self.timeout = timeout
        self._environ = environ
        self._docker_config = docker_config
        self._address_lookup = address_lookup
        self._addresses: dict[str, tuple[Address, ...]] = {}
        self._transports: dict[str, HostTransport] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            transport.close()

    def config_for(self, host: str) -> RegistryConfig:
        """The settings of ``host`` (Docker Hub's API host shares ``docker.io``'s), defaults if none."""
        return self.configs.get(settings_key(host)) or self.default_config

    @contextmanager
    def transfer(self, registry: str) -> Iterator[None]:
        """Hold one of ``registry``'s transfer slots (``max_parallel_fetches``) for the block, if it has a
        limit. Held by whoever reads content, from the first request until the last byte is read, also
        while that content comes from a mirror: the limit is on how much of the registry's content moves."""
        parallel = self.config_for(registry).max_parallel_fetches
        if parallel is None:
            yield
            return
        with self.budget.fetch(settings_key(registry), parallel):
            yield

    def _admit(self, url: str) -> None:
        """Wait for the budget of ``url``'s host (``max_requests_per_second``), if it has one."""
        host = urlsplit(url).netloc
        per_second = self.config_for(host).max_requests_per_second
        if per_second is not None:
            self.budget.request(settings_key(host), per_second)

    def endpoints(self, registry: str) -> list[Endpoint]:
        """Where ``registry``'s content is read from, in order: its mirrors, then the registry itself.

        The registry itself is reached over HTTPS, except loopback hosts and hosts marked ``insecure``
        that have no ``ca_bundle``: those use plain HTTP. (A ``ca_bundle`` says the host speaks TLS; to reach
        an insecure host over HTTPS without verification, list ``https://host`` as its first mirror.)
        """
        mirrors = [Endpoint(origin, registry, is_mirror=True) for origin in self.config_for(registry).mirrors]
        return [*mirrors, self.upstream(registry)]

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

    def leads_inward(self, origin: str, url: str) -> bool:
        """Whether going from ``origin`` (a registry or mirror) to ``url`` would cross from a public host into
        private, loopback or link-local addresses (see :func:`.policy.redirect_allowed`).

        Addresses are looked up once per host and kept for the client's life: what matters is the class of a
        host's addresses (a CDN stays public), and a redirect per blob should not cost a DNS query each.
        """
        return not redirect_allowed(self._lookup(urlsplit(origin).netloc), self._lookup(urlsplit(url).netloc))

    def _lookup(self, netloc: str) -> tuple[Address, ...]:
        with self._lock:
            known = self._addresses.get(netloc)
        if known is None:
            known = tuple(self._address_lookup(netloc))
            with self._lock:
                self._addresses[netloc] = known
        return known

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
        them, and one from a public host into private, loopback or link-local addresses is refused.
        Error statuses become typed errors naming ``subject``.
        """
        origin = origin_of(url)
        self._admit(url)
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
            if not same_origin and self.leads_inward(origin, url):
                raise PermanentError(
                    f"{subject}: redirect from {origin} to the private, loopback or link-local address "
                    f"{origin_of(url)} refused"
                )
            log.debug("%s: redirected to %s", subject, origin_of(url))
            self._admit(url)
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
