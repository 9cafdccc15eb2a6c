"""A real distribution registry on loopback, for tests and demos: ``docker-registry serve config.yml``.

``LocalRegistry`` writes a distribution 2.8 configuration (filesystem storage in a temporary directory,
deletes enabled, optional htpasswd Basic auth or Bearer token auth, optional TLS with a self-signed
certificate for 127.0.0.1 whose PEM is ``ca_bundle``), starts the Debian ``docker-registry``
binary on ``127.0.0.1:<free port>``, waits until ``/v2/`` answers and stops it again on exit::

    with LocalRegistry() as registry:
        push_image(registry.url, "demo/app", "v1", image)

htpasswd entries are bcrypt hashes (the only kind distribution accepts), made with the ``bcrypt`` package.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType

import requests
import yaml

#: Where Debian's ``docker-registry`` package installs distribution.
REGISTRY_BINARY = "/usr/bin/docker-registry"
START_TIMEOUT_SECONDS = 20.0
START_ATTEMPTS = 3


@dataclass(frozen=True)
class TokenAuth:
    """distribution's ``auth.token`` section: where clients get tokens, and whose signatures to trust."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


class RegistryStartError(RuntimeError):
    """The registry process did not come up; the message carries the end of its log."""


class LocalRegistry:
    """A ``docker-registry`` process on ``127.0.0.1`` with its own storage, as a context manager.

    ``htpasswd`` maps usernames to passwords (Basic auth); ``token_auth`` configures Bearer auth instead.
    ``url`` (``http://127.0.0.1:PORT``) and ``host`` (``127.0.0.1:PORT``) are set once started.
    """

    def __init__(
        self,
        *,
        htpasswd: Mapping[str, str] | None = None,
        token_auth: TokenAuth | None = None,
        tls: bool = False,
        binary: str = REGISTRY_BINARY,
        workdir: Path | None = None,
    ) -> None:
        if htpasswd and token_auth:
            raise ValueError("a registry has one auth method: htpasswd or token_auth, not both")
        self.htpasswd = dict(htpasswd or {})
        self.token_auth = token_auth
        self.tls = tls
        self.binary = binary
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ocimirror-registry-"))
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of references to this registry."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with TLS): the base of its API."""
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def pid(self) -> int | None:
        """The registry process's id while it runs (for measuring it)."""
        return self._process.pid if self._process is not None else None

    @property
    def ca_bundle(self) -> Path:
        """With ``tls``: the PEM certificate clients must trust (it is self-signed)."""
        return self.workdir / "tls-cert.pem"

    @property
    def storage(self) -> Path:
        """The filesystem storage root (``docker/registry/v2/...`` inside)."""
        return self.workdir / "storage"

    @property
    def log_path(self) -> Path:
        """The registry's combined stdout and stderr."""
        return self.workdir / "registry.log"

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the registry and wait until it serves ``/v2/``; retry on another port if one was taken."""
        if not Path(self.binary).exists():
            raise RegistryStartError(f"{self.binary} not found: install the docker-registry package")
        for attempt in range(START_ATTEMPTS):
            self.port = free_port()
            self._write_config()
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    [self.binary, "serve", str(self.workdir / "config.yml")],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_ready():
                return
            self._terminate()
            if attempt == START_ATTEMPTS - 1:
                raise RegistryStartError(f"registry did not start; log tail:\n{self._log_tail()}")

    def stop(self) -> None:
        """Stop the process and remove the storage this object created."""
        self._terminate()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                verify = str(self.ca_bundle) if self.tls else True
                status = requests.get(f"{self.url}/v2/", timeout=1, verify=verify).status_code
            except requests.RequestException:
                status = 0
            if status in (200, 401):
                return True
            time.sleep(0.05)
        return False

    def _write_config(self) -> None:
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": os.urandom(16).hex()},
        }
        if self.tls:
            key_path = self.workdir / "tls-key.pem"
            write_self_signed_certificate(self.ca_bundle, key_path)
            config["http"]["tls"] = {"certificate": str(self.ca_bundle), "key": str(key_path)}  # type: ignore[index]
        if self.htpasswd:
            path = self.workdir / "htpasswd"
            path.write_text(htpasswd_file(self.htpasswd))
            config["auth"] = {"htpasswd": {"realm": "ocimirror-test", "path": str(path)}}
        elif self.token_auth is not None:
            token = self.token_auth
            config["auth"] = {
                "token": {
                    "realm": token.realm,
                    "service": token.service,
                    "issuer": token.issuer,
                    "rootcertbundle": str(token.rootcertbundle),
                }
            }
        (self.workdir / "config.yml").write_text(yaml.safe_dump(config))

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _test_extra(module: str) -> ModuleType:
    """Import ``module``, which only htpasswd and TLS registries need, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeError(
            f"{module} is needed for registries with htpasswd or TLS: pip install 'ocimirror[test]'"
        ) from None


def htpasswd_file(users: Mapping[str, str]) -> str:
    """htpasswd lines ``user:bcrypt-hash`` for ``users`` (username -> password)."""
    bcrypt = _test_extra("bcrypt")

    return "".join(
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
        for user, password in users.items()
    )


def write_self_signed_certificate(cert_path: Path, key_path: Path) -> None:
    """A fresh EC key and a self-signed server certificate for 127.0.0.1 and localhost (valid one day)."""
    import datetime
    import ipaddress

    _test_extra("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocimirror test registry")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
