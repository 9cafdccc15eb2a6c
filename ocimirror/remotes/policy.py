"""The rules every registry request follows: where plain HTTP is allowed, what is retried, what an HTTP
status means as an ocimirror error.

Kept apart from the client so the token requests of :mod:`.auth` and the API requests of
:mod:`.registry` cannot drift apart on them.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from ..errors import ConfigError, NotFound, PermanentError, TransientError, Unauthorized

#: Statuses that mean "try again later" (README, "How it works", lists what is never retried).
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Longest ``Retry-After`` the client sleeps for inside one call; longer hints surface as TransientError.
DEFAULT_RETRY_AFTER_MAX = 30
#: How much of an error body is quoted in a message.
ERROR_BODY_LIMIT = 300


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1, with or without a port: the hosts plain HTTP is fine for."""
    hostname = urlsplit(f"//{host}").hostname or ""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: the unit credentials and connection pools belong to."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def check_plain_http(url: str, insecure: bool, what: str) -> None:
    """Refuse ``http://`` to anything but a loopback host or one the user marked ``insecure``."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and (insecure or is_loopback_host(parts.netloc)):
        return
    if parts.scheme == "http":
        raise ConfigError(
            f"{what}: plain HTTP to {parts.netloc} is refused; only loopback hosts or hosts configured "
            "with insecure: true may use it"
        )
    raise ConfigError(f"{what}: unsupported URL scheme {parts.scheme!r}")


def make_retry(total: int = 4, backoff_factor: float = 0.25, retry_after_max: int = DEFAULT_RETRY_AFTER_MAX) -> Retry:
    """urllib3's retry policy for registry requests: transient statuses, resets and timeouts are retried
    with exponential backoff and jitter, ``Retry-After`` is honoured up to ``retry_after_max`` seconds, and
    the last answer is returned (not raised) so it can be turned into a typed error."""
    return Retry(
        total=total,
        connect=total,
        read=total,
        status=total,
        other=0,  # TLS failures and the like: retrying cannot fix a certificate
        redirect=0,
        status_forcelist=TRANSIENT_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        backoff_factor=backoff_factor,
        backoff_jitter=backoff_factor,
        backoff_max=10,
        raise_on_status=False,
        raise_on_redirect=False,
        respect_retry_after_header=True,
        retry_after_max=retry_after_max,
    )


def retry_after_seconds(response: requests.Response) -> float | None:
    """The ``Retry-After`` header as seconds (it may be a number or an HTTP date), or ``None``."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return Retry(retry_after_max=10**9).parse_retry_after(value)
    except InvalidHeader:
        return None


def content_length(headers: Mapping[str, str]) -> int | None:
    """The ``Content-Length`` among response ``headers``, or ``None`` when absent or not plain ASCII digits
    (``str.isdigit`` also accepts digits such as ``²`` that ``int`` refuses)."""
    value = (headers.get("Content-Length") or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def raise_for_status(response: requests.Response, subject: str) -> None:
    """Turn an error status into a typed error whose message starts with ``subject`` (registry, repository
    and reference); 2xx and 3xx pass. The response is closed when an error is raised."""
    status = response.status_code
    if status < 400:
        return
    detail = _error_detail(response)
    response.close()
    message = f"{subject}: HTTP {status}{detail}"
    if status in (401, 403):
        raise Unauthorized(f"{message}: credentials missing, refused or without access")
    if status == 404:
        raise NotFound(f"{message}: not found")
    if status in TRANSIENT_STATUSES or status >= 500:
        raise TransientError(message, retry_after=retry_after_seconds(response))
    raise PermanentError(message)


def _error_detail(response: requests.Response) -> str:
    """The registry's error code and message (distribution's ``{"errors": [...]}``), briefly.

    Registry responses are always streamed, so at most 4 KiB of a hostile body is ever read.
    """
    if response.request is not None and response.request.method == "HEAD":
        return ""
    try:
        raw = response.raw.read(4096, decode_content=True) if response.raw is not None else b""
        errors = json.loads(raw).get("errors") or []
        first = errors[0]
        text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except Exception:  # noqa: BLE001 - any unreadable body simply has no detail to add
        return ""
    return f" ({text[:ERROR_BODY_LIMIT]})" if text else ""


def error_from_exception(error: requests.RequestException, subject: str) -> PermanentError | TransientError:
    """A requests failure (reset, timeout, TLS) as a typed error; TLS failures are permanent."""
    if isinstance(error, requests.exceptions.SSLError):
        return PermanentError(f"{subject}: TLS verification failed: {_first_line(error)}")
    if isinstance(error, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return PermanentError(f"{subject}: invalid URL")
    return TransientError(f"{subject}: {type(error).__name__}: {_first_line(error)}")


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0][:ERROR_BODY_LIMIT] if str(error) else type(error).__name__
