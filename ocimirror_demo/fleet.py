"""A Prefect fleet on loopback, for tests, the bench and demos: ``prefect server start``, a process work pool,
the repository's ``fetch-image`` deployment, and process workers, all started and stopped here::

    with running_fleet(home) as fleet:
        fleet.start_worker("worker-a")
        with fleet.settings():          # this process talks to the fleet's server
            mirror_sync(config, fan_out=True)

Everything runs with its own ``PREFECT_HOME`` (the server's SQLite database, the workers' result storage)
and analytics off; only loopback is used. The deployment is made with ``prefect deploy`` from
``deployments/prefect.yaml`` (``OCIMIRROR_HOME`` set to this checkout), as a user would, onto a pool named
``ocimirror`` as that file says; workers run flows from this checkout with it first on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import requests

#: This checkout: where the flows and ``deployments/prefect.yaml`` are.
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The work pool ``deployments/prefect.yaml`` names.
POOL = "ocimirror"
#: Creating the server's database takes ~20 s on a busy 2-core machine; a worker starts in ~5 s.
START_TIMEOUT_SECONDS = 180.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrefectFleet:
    """A Prefect server, the ``ocimirror`` process pool with the ``fetch-image`` deployment, and workers."""

    def __init__(self, home: Path, worker_poll_seconds: float = 1.0) -> None:
        self.home = home
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        self.env = base | {
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_LOCAL_STORAGE_PATH": str(home / "results"),
            "PREFECT_WORKER_QUERY_SECONDS": str(worker_poll_seconds),
            "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
            "OCIMIRROR_HOME": str(REPO_ROOT),
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [base.get("PYTHONPATH")])]),
        }
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self._server: subprocess.Popen[bytes] | None = None

    def log(self, name: str) -> Path:
        """Where the output of ``name`` (``server``, a worker's name, ``deploy``) goes."""
        return self.home / f"{name}.log"

    def start(self) -> None:
        """Start the server, create the pool and deploy ``fetch-image`` onto it."""
        self.home.mkdir(parents=True, exist_ok=True)
        command = ["server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--no-ui", "--analytics-off"]
        self._server = self._spawn("server", command)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._healthy():
            if self._server.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prefect server did not start; see {self.log('server')}")
            time.sleep(0.5)
        self.prefect("work-pool", "create", POOL, "--type", "process")
        self.prefect(
            "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--name", "fetch-image", log="deploy"
        )

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.api_url}/health", timeout=2).ok
        except requests.RequestException:
            return False

    def _spawn(self, name: str, arguments: list[str]) -> subprocess.Popen[bytes]:
        with self.log(name).open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "prefect", *arguments],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopping it stops what it started
            )

    def prefect(self, *arguments: str, log: str = "cli") -> None:
        """Run a ``prefect`` command against the fleet's server; raise with its output if it fails."""
        done = subprocess.run(
            [sys.executable, "-m", "prefect", *arguments],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            timeout=START_TIMEOUT_SECONDS,
        )
        with self.log(log).open("ab") as file:
            file.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(arguments)} failed: {(done.stdout + done.stderr)[-2000:]!r}")

    def start_worker(self, name: str, limit: int | None = None) -> subprocess.Popen[bytes]:
        """Start a process worker of the pool; ``limit`` bounds the flow runs it runs at once."""
        command = ["worker", "start", "--pool", POOL, "--name", name, "--type", "process"]
        if limit is not None:
            command += ["--limit", str(limit)]
        self.workers[name] = self._spawn(name, command)
        return self.workers[name]

    def stop_worker(self, name: str) -> None:
        """Stop a worker and the flow runs it started (its process group)."""
        _stop(self.workers.pop(name))

    def stop(self) -> None:
        """Stop every worker, then the server."""
        for name in list(self.workers):
            self.stop_worker(name)
        if self._server is not None:
            _stop(self._server)
            self._server = None

    @contextmanager
    def settings(self) -> Iterator[None]:
        """Point this process's Prefect client (flows run here, API reads) at the fleet's server and result
        storage for the block, also in threads started meanwhile (a sync's planning threads, Prefect's own
        service threads), which read the process-global settings context, as ``prefect_test_harness`` does."""
        from prefect.context import SettingsContext, _temporary_global_settings_context
        from prefect.logging.handlers import APILogHandler
        from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url, PREFECT_LOCAL_STORAGE_PATH: self.home / "results"}):
            context = SettingsContext.get()
            assert context is not None
            with _temporary_global_settings_context(context):
                try:
                    yield
                finally:
                    # Logs of flows run here go to the API in batches: send them while it is still there.
                    APILogHandler().flush()


@contextmanager
def running_fleet(home: Path) -> Iterator[PrefectFleet]:
    """A started :class:`PrefectFleet` in ``home``, stopped (workers, then server) when the block ends."""
    fleet = PrefectFleet(home)
    fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL after a grace period."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    else:
        # The leader is gone; flow runs it started may live on in its group.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
