"""Running the registry API: uvicorn on a socket bound here, with TLS, idle timeouts and graceful shutdown.

The socket is bound before uvicorn starts, so a port in use is one clear ``ServeError`` (uvicorn itself would
log and exit), and port 0 gives a free port whose number is known at once. One event loop serves every
connection: a slow client only slows its own response (each waits for its socket to drain), keep-alive
connections cost no thread, and a connection idle for ``IDLE_TIMEOUT_SECONDS`` (kept alive between requests,
or opened and never used) is closed. ``SIGINT``/``SIGTERM`` stop accepting, let responses in flight finish for
up to ``SHUTDOWN_GRACE_SECONDS``, then close the rest.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import OcimirrorError
from .app import RegistryApp

IDLE_TIMEOUT_SECONDS = 15
SHUTDOWN_GRACE_SECONDS = 10
#: Connections the kernel queues before they are accepted.
BACKLOG = 2048
#: How long ``start`` waits for a background server to come up before giving up.
START_TIMEOUT_SECONDS = 30.0


class ServeError(OcimirrorError):
    """The server cannot start: a busy port, an address that does not exist here, unusable TLS files."""


@dataclass(frozen=True)
class TLSFiles:
    """A PEM certificate (chain) and its private key."""

    certificate: Path
    key: Path


class _IdleTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, with its keep-alive timer also running from the moment a connection is made
    until a complete request has arrived: a connection that never sends one, or trickles a partial one, is
    closed when the timer fires instead of being held forever."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        # Unlike the base class, bytes alone do not stop the timer: a complete request does (handle_events).
        self.conn.receive_data(data)
        self.handle_events()


class _AbortedResponseFilter(logging.Filter):
    """Drops uvicorn's line for a response the application ended early: the application logged why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


_ABORTED_RESPONSE_FILTER = _AbortedResponseFilter()


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``; ``ServeError`` with the reason in one line if that is impossible."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as error:
        raise ServeError(f"cannot listen on {host}:{port}: {error}") from None
    listener = socket.socket(family, kind, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(BACKLOG)  # from here on clients queue, even before the event loop runs
    except OSError as error:
        listener.close()
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return listener


class RegistryServer:
    """Serves a :class:`RegistryApp` on ``host:port`` (``port`` 0: any free port), over TLS if ``tls``.

    ``run()`` serves in the foreground until a signal; ``start()``/``stop()`` in a background thread, for tests
    and embedding.
    """

    def __init__(
        self,
        app: RegistryApp,
        host: str = "127.0.0.1",
        port: int = 5000,
        tls: TLSFiles | None = None,
        idle_timeout: int = IDLE_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.tls = tls
        self.socket = bind(host, port)
        self.host, self.port = self.socket.getsockname()[:2]
        config = uvicorn.Config(
            app,
            interface="asgi3",
            http=_IdleTimeoutProtocol,
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=idle_timeout,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            backlog=BACKLOG,
            ssl_certfile=str(tls.certificate) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
        )
        try:
            config.load()
        except (OSError, ssl.SSLError) as error:
            self.socket.close()
            assert tls is not None  # nothing else in load() touches files
            raise ServeError(
                f"cannot use TLS certificate {tls.certificate} with key {tls.key}: {_ssl_reason(error)}"
            ) from None
        logging.getLogger("uvicorn.error").addFilter(_ABORTED_RESPONSE_FILTER)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http(s)://host:port``, the base clients use."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def run(self) -> None:
        """Serve until ``SIGINT`` or ``SIGTERM`` (from the main thread), then shut down gracefully."""
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start(self) -> None:
        """Serve in a background thread; return once the server accepts connections."""
        self._thread = threading.Thread(target=self.run, name=f"ocimirror-serve-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServeError(f"the server on {self.url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop a server started with ``start`` (responses in flight get the shutdown grace period)."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _ssl_reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}{f': {error.filename}' if error.filename else ''}"
    return str(error)
