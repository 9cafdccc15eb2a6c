"""A fault-injecting HTTP proxy on loopback, for proving that clients survive real network trouble.

``FaultProxy`` forwards every request to an upstream registry and, for requests matching a :class:`Fault`,
misbehaves instead: cuts a body halfway, answers a status (503, 429 with ``Retry-After``) a number of
times, ignores ``Range``, strips response headers, sends more bytes than announced, or redirects to a
second port it also serves (like blob storage behind a registry). Every request that arrives, on either
port, is recorded with its headers, so a test can check for example that ``Authorization`` never reached
the redirect target::

    with FaultProxy(registry.url) as proxy:
        proxy.add(Fault("cut", path_contains="/blobs/"))
        ...  # pull through proxy.url
        assert any("Range" in r.headers for r in proxy.requests)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

import requests

FaultKind = Literal["cut", "stall", "status", "ignore_range", "strip_headers", "redirect", "extend"]
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "host"}
)


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server for tests: daemon threads, quick shutdown, and silence about clients that
    hang up early (which fault tests make them do on purpose)."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self, name: str) -> None:
        """Serve on a daemon thread."""
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True).start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.shutdown()
        self.server_close()

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass
class Fault:
    """One kind of misbehaviour for requests whose path contains ``path_contains`` (and ``method``).

    ``times`` is how many matching requests it affects (``None``: all). Kinds:
    ``cut`` sends half the body then closes the connection; ``stall`` sends half the body, then nothing
    for ``delay`` seconds before closing (a read timeout for the client); ``status`` answers ``status`` with
    ``headers``; ``ignore_range`` drops the request's ``Range`` so the full body comes back with 200;
    ``strip_headers`` removes the response headers named in ``strip``; ``redirect`` answers 307 to the
    same path on the proxy's second port; ``extend`` appends ``extra`` bytes to the body.
    """

    kind: FaultKind
    path_contains: str = ""
    method: str | None = None
    times: int | None = 1
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    strip: tuple[str, ...] = ()
    extra: int = 16
    delay: float = 1.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Whether this fault applies to a request (without using it up)."""
        active = self.times is None or self.hits < self.times
        return active and self.path_contains in path and (self.method is None or self.method == method)


@dataclass(frozen=True)
class RecordedRequest:
    """A request as it arrived: on the ``proxy`` port or the ``redirect`` port, over the client connection
    from ``client_port`` (one port per TCP connection, so tests can see connection reuse)."""

    server: Literal["proxy", "redirect"]
    method: str
    path: str
    headers: dict[str, str]
    client_port: int


class FaultProxy:
    """The proxy: ``url`` in front of ``upstream``, ``redirect_url`` serving the same content.

    ``upstream_auth`` is an ``Authorization`` value the redirect port adds on its own when it fetches
    from upstream (like a presigned URL), so redirected clients need no credentials of theirs.
    """

    def __init__(self, upstream: str, upstream_auth: str | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.upstream_auth = upstream_auth
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._servers: list[LoopbackHTTPServer] = []

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the proxy."""
        return self._servers[0].url

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` of the proxy, for references."""
        return urlsplit(self.url).netloc

    @property
    def redirect_url(self) -> str:
        """``http://127.0.0.1:PORT2``: where ``redirect`` faults send clients."""
        return self._servers[1].url

    def add(self, fault: Fault) -> Fault:
        """Arm ``fault``; returns it so a test can read ``hits`` afterwards."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Forget faults and recorded requests."""
        with self._lock:
            self.faults.clear()
            self.requests.clear()

    def recorded(self, server: str | None = None, path_contains: str = "") -> list[RecordedRequest]:
        """Recorded requests, filtered by port and path."""
        with self._lock:
            return [r for r in self.requests if (server is None or r.server == server) and path_contains in r.path]

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Serve both ports on background threads."""
        for role in ("proxy", "redirect"):
            server = LoopbackHTTPServer(_handler_for(self, role))
            server.start(f"fault-proxy-{role}")
            self._servers.append(server)

    def stop(self) -> None:
        """Stop serving and close the listening sockets."""
        for server in self._servers:
            server.stop()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False
        return session


def _handler_for(proxy: FaultProxy, role: Literal["proxy", "redirect"]) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        pass

    Handler.proxy = proxy
    Handler.role = role
    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stalls
    proxy: FaultProxy
    role: Literal["proxy", "redirect"]

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request stderr lines."""

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        headers = {key: value for key, value in self.headers.items()}
        self.proxy._record(RecordedRequest(self.role, self.command, self.path, headers, self.client_address[1]))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = self.proxy._take_fault(self.command, self.path) if self.role == "proxy" else None
        kind = fault.kind if fault else None
        if fault is not None and kind == "status":
            self._answer(fault.status, {**fault.headers, "Content-Type": "application/json"}, _error_body(fault.status))
            return
        if kind == "redirect":
            self._answer(307, {"Location": f"{self.proxy.redirect_url}{self.path}"}, b"")
            return
        forward = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        if kind == "ignore_range":
            forward = {k: v for k, v in forward.items() if k.lower() != "range"}
        if self.role == "redirect":
            forward = {k: v for k, v in forward.items() if k.lower() != "authorization"}
            if self.proxy.upstream_auth:
                forward["Authorization"] = self.proxy.upstream_auth
        upstream = self.proxy._session().request(
            self.command,
            f"{self.proxy.upstream}{self.path}",
            headers=forward,
            data=body or None,
            allow_redirects=False,
            stream=True,
            timeout=30,
        )
        with upstream:
            content = b"" if self.command == "HEAD" else upstream.raw.read(decode_content=False)
            reply = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        if "Location" in reply and reply["Location"].startswith(self.proxy.upstream):
            reply["Location"] = self.proxy.url + reply["Location"][len(self.proxy.upstream) :]
        if fault is not None and kind == "strip_headers":
            stripped = {name.lower() for name in fault.strip}
            reply = {k: v for k, v in reply.items() if k.lower() not in stripped}
        if fault is not None and kind == "extend":
            content += b"\0" * fault.extra
        if self.command != "HEAD":
            reply["Content-Length"] = str(len(content))
        if kind in ("cut", "stall"):
            self._answer(upstream.status_code, reply, content[: len(content) // 2], close=True)
            if kind == "stall" and fault is not None:
                time.sleep(fault.delay)
            return
        self._answer(upstream.status_code, reply, content)

    def _answer(self, status: int, headers: dict[str, str], body: bytes, close: bool = False) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers and self.command != "HEAD":
            self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()


def _error_body(status: int) -> bytes:
    return json.dumps({"errors": [{"code": "INJECTED", "message": f"fault proxy answered {status}"}]}).encode()
