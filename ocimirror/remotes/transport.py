"""One registry host's connection pool, TLS settings and authentication, behind a single ``send``.

Each host gets its own ``requests.Session`` so its pool size, CA bundle and credentials cannot leak to
another host, and connections are reused across the many small requests a mirror makes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies
from urllib3.util.retry import Retry

from .. import __version__
from ..errors import Unauthorized
from .auth import Authorizer
from .config import Credentials, RegistryConfig
from .policy import check_plain_http, error_from_exception

#: (connect, read) timeouts in seconds for every request.
DEFAULT_TIMEOUT = (10.0, 60.0)
USER_AGENT = f"ocimirror/{__version__}"


class HostTransport:
    """Sends requests to one ``scheme://host[:port]`` with pooled connections, retries and credentials.

    ``credentials`` is called at most once, on the first authentication challenge, so a credential helper
    only runs for hosts that actually ask for credentials. TLS is verified against the host's
    ``ca_bundle``, else ``default_ca_bundle``, else certifi's roots; ``insecure`` hosts are not verified.
    """

    def __init__(
        self,
        origin: str,
        config: RegistryConfig,
        credentials: Callable[[], Credentials | None],
        *,
        default_ca_bundle: str | None = None,
        retry: Retry,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        check_plain_http(origin, config.insecure, what=f"registry endpoint {origin}")
        self.origin = origin
        self.host = urlsplit(origin).netloc
        self.timeout = timeout
        session = requests.Session()
        session.trust_env = False  # no ~/.netrc credentials slipped into requests; proxies are applied below
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=config.max_connections, max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.verify = False if config.insecure else (config.ca_bundle or default_ca_bundle or True)
        session.headers["User-Agent"] = USER_AGENT
        self.session = session
        self.authorizer = Authorizer(self.host, _once(credentials), session, insecure=config.insecure, timeout=timeout)

    def __repr__(self) -> str:
        return f"HostTransport({self.origin!r})"

    def send(
        self,
        method: str,
        url: str,
        *,
        subject: str,
        scope: str | None = None,
        authenticate: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send one request (no redirects followed), answering one 401 challenge by retrying once.

        The response is streamed and returned whatever its status; transport failures become typed errors
        whose message starts with ``subject``.
        """
        headers = dict(headers or {})
        with _naming(subject):
            sent = self.authorizer.authorization(scope) if authenticate else None
        if sent:
            headers["Authorization"] = sent
        response = self._send_once(method, url, headers, subject)
        if response.status_code != 401 or not authenticate:
            return response
        try:
            with _naming(subject):
                retry = self.authorizer.handle_challenge(response, scope, sent)
                authorization = self.authorizer.authorization(scope) if retry else None
        except BaseException:
            response.close()
            raise
        if not authorization:
            return response
        response.close()
        headers["Authorization"] = authorization
        return self._send_once(method, url, headers, subject)

    def _send_once(self, method: str, url: str, headers: dict[str, str], subject: str) -> requests.Response:
        try:
            return self.session.request(
                method,
                url,
                headers=headers,
                stream=method != "HEAD",  # a HEAD answer read at once hands its connection back to the pool
                allow_redirects=False,
                timeout=self.timeout,
                proxies=get_environ_proxies(url),
            )
        except requests.RequestException as error:
            raise error_from_exception(error, subject) from None

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()


@contextmanager
def _naming(subject: str) -> Iterator[None]:
    """Prefix authentication refusals with the request's subject (registry, repository, reference)."""
    try:
        yield
    except Unauthorized as error:
        raise Unauthorized(f"{subject}: {error}", status=error.status, codes=error.codes) from None


def _once(source: Callable[[], Credentials | None]) -> Callable[[], Credentials | None]:
    """Call ``source`` on first use only, thread-safely (a credential helper is a process to run)."""
    lock = threading.Lock()
    cache: list[Credentials | None] = []

    def load() -> Credentials | None:
        with lock:
            if not cache:
                cache.append(source())
            return cache[0]

    return load
