"""The rules every registry request follows: where plain HTTP is allowed, where a redirect may lead, what is
retried, what an HTTP status means as an ocimirror error.

Kept apart from the client so the token requests of :mod:`.auth` and the API requests of
:mod:`.registry` cannot drift apart on them.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Mapping, Sequence
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
#: Most error codes kept from one answer (distribution sends one or a few; the rest of a list is noise).
MAX_ERROR_CODES = 8
#: What an error code looks like (distribution's are ``MANIFEST_UNKNOWN``, ``TOOMANYREQUESTS``...): anything
#: else a registry sends there is dropped, so codes are safe to print and to match on.
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1, with or without a port: the hosts plain HTTP is fine for."""
    hostname = urlsplit(f"//{host}").hostname or ""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def addresses_of(netloc: str) -> list[Address]:
    """The IP addresses ``host[:port]`` stands for: itself if it is an address, else what the system resolver
    answers (none when it cannot resolve: the request itself will then fail with a clear error)."""
    hostname = urlsplit(f"//{netloc}").hostname or ""
    try:
        return [_unmapped(ipaddress.ip_address(hostname))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    # The address is sockaddr[0]; an IPv6 one may carry a zone ("fe80::1%eth0"), whose class is the address's.
    return list(dict.fromkeys(_unmapped(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos))


def _unmapped(address: Address) -> Address:
    """``::ffff:127.0.0.1`` is 127.0.0.1 on the wire, and must be judged as such."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_internal_address(address: Address) -> bool:
    """Private, loopback, link-local (169.254.169.254, the cloud metadata endpoint), shared, reserved or
    unspecified: any address that is not globally routable and so belongs to someone's own network."""
    return not _unmapped(address).is_global


def redirect_allowed(registry: Sequence[Address], target: Sequence[Address]) -> bool:
    """Whether a registry at ``registry``'s addresses may send the client to ``target``'s addresses.

    A public registry may only redirect to public addresses: otherwise anyone who controls a registry (or
    a manifest's ``urls``) could make a mirror running inside a network read that network's services, such
    as a cloud metadata endpoint (server-side request forgery). A registry that is itself internal (the
    user's own, on loopback or a private network) may redirect anywhere: it is already inside. A target is
    internal if any of its addresses is, since the connection may use any of them; a target that does not
    resolve is allowed, as the request then fails on its own. The lookup and the connection are separate
    steps, so a host whose DNS answer changes in between (DNS rebinding) is not caught here.
    """
    if any(is_internal_address(address) for address in registry):
        return True
    return not any(is_internal_address(address) for address in target)


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
    and reference) and which carries the status and the registry's error codes; 2xx and 3xx pass. The
    response is closed when an error is raised."""
    status = response.status_code
    if status < 400:
        return
    codes, text = _error_details(response)
    response.close()
    detail = f" ({text[:ERROR_BODY_LIMIT]})" if text else ""
    message = f"{subject}: HTTP {status}{detail}"
    if status in (401, 403):
        raise Unauthorized(f"{message}: credentials missing, refused or without access", status=status, codes=codes)
    if status == 404:
        raise NotFound(f"{message}: not found", status=status, codes=codes)
    if status in TRANSIENT_STATUSES or status >= 500:
        raise TransientError(message, retry_after=retry_after_seconds(response), status=status, codes=codes)
    raise PermanentError(message, status=status, codes=codes)


def _error_details(response: requests.Response) -> tuple[list[str], str]:
    """The registry's error codes and first ``code: message`` (distribution's ``{"errors": [...]}``).

    Registry responses are always streamed, so at most 4 KiB of a hostile body is ever read; codes that do not
    look like identifiers are dropped.
    """
    if response.request is not None and response.request.method == "HEAD":
        return [], ""
    try:
        raw = response.raw.read(4096, decode_content=True) if response.raw is not None else b""
        errors = json.loads(raw).get("errors") or []
        entries = [entry for entry in errors[:MAX_ERROR_CODES] if isinstance(entry, dict)]
    except Exception:  # noqa: BLE001 - any unreadable body simply has no detail to add
        return [], ""
    codes = [code for entry in entries if isinstance(code := entry.get("code"), str) and _ERROR_CODE.fullmatch(code)]
    first = entries[0] if entries else {}
    text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    return codes, text


def error_from_exception(error: requests.RequestException, subject: str) -> PermanentError | TransientError:
    """A requests failure (reset, timeout, TLS) as a typed error; TLS failures are permanent."""
    if isinstance(error, requests.exceptions.SSLError):
        return PermanentError(f"{subject}: TLS verification failed: {_first_line(error)}")
    if isinstance(error, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return PermanentError(f"{subject}: invalid URL")
    return TransientError(f"{subject}: {type(error).__name__}: {_first_line(error)}")


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0][:ERROR_BODY_LIMIT] if str(error) else type(error).__name__
