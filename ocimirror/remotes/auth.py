"""Registry authentication: answering ``WWW-Authenticate`` challenges with Bearer tokens or Basic credentials.

A registry answers an unauthenticated request with 401 and a challenge (parsed by :mod:`.challenge`). For
``Bearer`` the client asks the challenge's ``realm`` (a token server) for a token scoped to what it wants to
do (``repository:library/alpine:pull``) — anonymously with GET, or with credentials through the OAuth2 POST
(``grant_type=password`` or ``refresh_token``), falling back to GET with Basic credentials for token
servers that refuse the POST, as distribution's token spec allows. ``Basic`` sends the credentials directly.

Tokens are cached per realm, service and scope until they expire, and only one request per key fetches a
token at a time, so a hundred parallel blob fetches cost one token request. After the first challenge the
host's scheme is known and later requests carry credentials from the start instead of paying a 401 each.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
import urllib3

from ..errors import TransientError, Unauthorized
from ..jsonlimits import decode_json
from .challenge import Challenge, parse_www_authenticate
from .config import Credentials
from .policy import check_plain_http, error_from_exception, origin_of, retry_after_seconds

#: Lifetime assumed for a token whose response has no ``expires_in`` (distribution's token spec).
DEFAULT_TOKEN_LIFETIME = 60
#: Tokens are dropped this many seconds before they expire so a request never leaves with a stale one.
EXPIRY_MARGIN = 5
#: The ``client_id`` sent with OAuth2 token requests (the spec requires one; it identifies the client).
CLIENT_ID = "ocimirror"
#: Largest token response read (tokens are a few kB; the realm is chosen by the registry, not the user).
MAX_TOKEN_RESPONSE = 2**20
#: Statuses of an OAuth2 POST that mean "this token server wants the GET flow" rather than a final no.
POST_REFUSED = frozenset({401, 404, 405})


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float


class Authorizer:
    """Authenticates requests to one registry endpoint host with the credentials found for it.

    ``credentials`` is asked when credentials are first needed (it may run a credential helper).
    ``authorization(scope)`` gives the header to send up front (once a challenge has been seen);
    ``handle_challenge(response, scope)`` reacts to a 401 and says whether a retry is worth it.
    """

    def __init__(
        self,
        host: str,
        credentials: Callable[[], Credentials | None],
        session: requests.Session,
        *,
        insecure: bool = False,
        timeout: tuple[float, float] = (10.0, 60.0),
    ) -> None:
        self.host = host
        self._credentials_source = credentials
        self._session = session
        self._insecure = insecure
        self._timeout = timeout
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"Authorizer(host={self.host!r})"

    @property
    def _credentials(self) -> Credentials | None:
        return self._credentials_source()

    def authorization(self, scope: str | None) -> str | None:
        """The ``Authorization`` value for a request needing ``scope``, if a challenge is known."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic()
        if challenge.scheme == "bearer":
            return f"Bearer {self._bearer(challenge, scope, stale=None)}"
        return None

    def handle_challenge(self, response: requests.Response, scope: str | None, sent: str | None) -> bool:
        """Learn from a 401; return True when a retry with new credentials may succeed.

        ``sent`` is the ``Authorization`` value the refused request carried: a cached token equal to it
        is dropped, so an expired or under-scoped token is replaced rather than reused.
        """
        challenges = parse_www_authenticate(response.headers.get("WWW-Authenticate", ""))
        usable = [c for c in challenges if c.scheme == "bearer" and c.params.get("realm")]
        if not usable and self._credentials is not None and self._credentials.has_password:
            usable = [c for c in challenges if c.scheme == "basic"]
        if not usable:
            return False
        challenge = usable[0]
        self._challenge = challenge
        if challenge.scheme == "basic":
            header = self._basic()
            return header is not None and header != sent
        stale = sent.removeprefix("Bearer ") if sent and sent.startswith("Bearer ") else None
        self._bearer(challenge, scope, stale=stale)
        return True

    def _who(self) -> str:
        """Whose access was refused, for messages: never the secret itself."""
        credentials = self._credentials
        if credentials is None:
            return "anonymous access"
        if credentials.username:
            return f"the credentials of user {credentials.username!r}"
        return "the identity token"

    def _basic(self) -> str | None:
        credentials = self._credentials
        if credentials is None or not credentials.has_password:
            return None
        return basic_header(credentials)

    def _bearer(self, challenge: Challenge, scope: str | None, stale: str | None) -> str:
        realm = challenge.params["realm"]
        service = challenge.params.get("service", "")
        key = (realm, service, scope or "")
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            token = self._tokens.get(key)
            if token is not None and token.expires_at > time.monotonic() and token.value != stale:
                return token.value
            token = self._fetch_token(realm, service, scope)
            self._tokens[key] = token
            return token.value

    def _fetch_token(self, realm: str, service: str, scope: str | None) -> _Token:
        # ``insecure`` vouches for the registry host only: a realm elsewhere gets credentials over HTTPS
        # (or loopback) whatever the registry's challenge says.
        trusted = self._insecure and self._is_registry(realm)
        check_plain_http(realm, trusted, what=f"token server of {self.host}")
        params = {"service": service} if service else {}
        if scope:
            params["scope"] = scope
        credentials = self._credentials
        if credentials is None:
            response = self._token_request("GET", realm, params=params)
        else:
            form = {**params, "client_id": CLIENT_ID}
            if credentials.identity_token is not None:
                form |= {"grant_type": "refresh_token", "refresh_token": credentials.identity_token.get_secret_value()}
            else:
                form |= {
                    "grant_type": "password",
                    "username": credentials.username or "",
                    "password": credentials.password.get_secret_value() if credentials.password else "",
                }
            response = self._token_request("POST", realm, data=form)
            if response.status_code in POST_REFUSED and credentials.has_password:
                response.close()
                response = self._token_request(
                    "GET", realm, params=params, headers={"Authorization": basic_header(credentials)}
                )
        return self._read_token(response, realm)

    def _is_registry(self, url: str) -> bool:
        return urlsplit(url).netloc.lower() == self.host.lower()

    def _token_request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """Send a token request on the registry's session; a realm on another host has its TLS verified even
        when the registry's own certificate is not."""
        # None leaves the session's own setting, which is the registry's.
        verify = True if self._insecure and not self._is_registry(url) else None
        try:
            return self._session.request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                verify=verify,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as error:
            raise error_from_exception(error, f"token server {origin_of(url)} for {self.host}") from None

    def _read_token(self, response: requests.Response, realm: str) -> _Token:
        """The token of a streamed answer, read only up to ``MAX_TOKEN_RESPONSE`` bytes: the realm is named
        by the registry, and a body without end must not fill the memory."""
        who = f"token server {origin_of(realm)} for {self.host}"
        with response:
            status = response.status_code
            if status in (401, 403):
                raise Unauthorized(f"{who} refused {self._who()} (HTTP {status})", status=status)
            if status == 408 or status == 429 or status >= 500:
                raise TransientError(
                    f"{who} answered HTTP {status}", retry_after=retry_after_seconds(response), status=status
                )
            if status != 200:
                raise Unauthorized(f"{who} answered HTTP {status} to a token request", status=status)
            try:
                content = response.raw.read(MAX_TOKEN_RESPONSE + 1, decode_content=True)
            except (requests.RequestException, OSError, urllib3.exceptions.HTTPError) as error:
                raise TransientError(f"{who}: token response broken ({type(error).__name__})") from None
        if len(content) > MAX_TOKEN_RESPONSE:
            raise Unauthorized(f"{who} sent a token response over {MAX_TOKEN_RESPONSE} bytes")
        try:
            body = decode_json(content)
            value = body.get("token") or body.get("access_token")
            lifetime = int(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            raise Unauthorized(f"{who} sent an unreadable token response") from None
        if not isinstance(value, str) or not value:
            raise Unauthorized(f"{who} sent no token")
        margin = min(EXPIRY_MARGIN, lifetime / 10)
        return _Token(value=value, expires_at=time.monotonic() + lifetime - margin)


def repository_scope(repository: str) -> str:
    """The token scope for pulling from ``repository``."""
    return f"repository:{repository}:pull"


def basic_header(credentials: Credentials) -> str:
    """``Basic base64(user:password)``."""
    password = credentials.password.get_secret_value() if credentials.password else ""
    raw = f"{credentials.username or ''}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode()
