"""Per-registry settings: mirrors, TLS, credentials and connection limits.

Settings are keyed by registry host as it appears in references (``docker.io``, ``127.0.0.1:5000``,
``mirror.example``). A mirror endpoint is itself a host and takes its TLS and credential settings from its
own entry, as containerd's ``hosts.toml`` does: trusting a mirror is a statement about the mirror.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)

#: Connections kept open per registry host when nothing else is configured.
DEFAULT_MAX_CONNECTIONS = 8


class Credentials(BaseModel):
    """A username and password, or an identity (refresh) token; secrets never show in ``repr``/``str``."""

    # pydantic quotes the input in validation errors; here that would be the password itself.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    username: str | None = None
    password: SecretStr | None = None
    identity_token: SecretStr | None = None

    @model_validator(mode="after")
    def _something_to_send(self) -> Credentials:
        if self.identity_token is None and (self.username is None or self.password is None):
            raise ValueError("credentials need a username and password, or an identity token")
        return self

    @property
    def has_password(self) -> bool:
        """Whether Basic auth (and the OAuth2 password grant) is possible."""
        return self.username is not None and self.password is not None


class RegistryConfig(BaseModel):
    """How to reach one registry host."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    mirrors: list[str] = Field(default_factory=list)
    """Endpoints (``https://mirror.example``, ``http://127.0.0.1:5001``) tried in order before the host."""
    insecure: bool = False
    """Allow plain HTTP and skip TLS verification for this host (loopback hosts may use HTTP anyway)."""
    ca_bundle: str | None = None
    """A PEM file of CA certificates to verify this host's TLS certificate against."""
    credentials: Credentials | None = None
    """Explicit credentials; when unset they come from the environment or Docker's config.json."""
    max_connections: PositiveInt = DEFAULT_MAX_CONNECTIONS
    """Connections kept open to this host; size it to the parallelism of the fetches."""
    max_requests_per_second: PositiveFloat | None = None
    """Requests a second this host gets at most, from everyone sharing the client's budget."""
    max_parallel_fetches: PositiveInt | None = None
    """Transfers of this registry's content (manifests, blobs, resolves) in flight at once, at most."""

    @field_validator("mirrors")
    @classmethod
    def _endpoints(cls, mirrors: list[str]) -> list[str]:
        return [normalise_endpoint(mirror) for mirror in mirrors]


def normalise_endpoint(endpoint: str) -> str:
    """``scheme://host[:port]`` without a trailing slash, or a ``ValueError`` saying what is wrong.

    The message shows the endpoint without any ``user:password@``: credentials belong in the registry's
    ``credentials``, and one written here by mistake must not be repeated into logs.
    """
    parts = urlsplit(endpoint.strip())
    host = parts.netloc.rpartition("@")[2]
    shown = repr(parts._replace(netloc=host).geturl())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"mirror {shown}: scheme must be http or https")
    if not host or parts.username or parts.password:
        raise ValueError(f"mirror {shown}: expected scheme://host[:port] without credentials")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"mirror {shown}: a path is not supported, give scheme://host[:port]")
    return f"{parts.scheme}://{parts.netloc}"
