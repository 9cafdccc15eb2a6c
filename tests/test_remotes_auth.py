"""Challenge parsing, credential sources (config, environment, config.json, helper programs), secrecy."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from ocimirror.errors import ConfigError
from ocimirror.remotes.challenge import Challenge, parse_www_authenticate
from ocimirror.remotes.config import Credentials, RegistryConfig
from ocimirror.remotes.credentials import environment_key, lookup_credentials

SECRET = "hunter2-very-secret"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:samalba/my-app:pull,push"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:samalba/my-app:pull,push",
                    },
                )
            ],
        ),
        ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
        ("basic realm=simple", [Challenge("basic", {"realm": "simple"})]),
        (
            'Basic realm="a, b", Bearer realm="https://x/t", service=svc',
            [Challenge("basic", {"realm": "a, b"}), Challenge("bearer", {"realm": "https://x/t", "service": "svc"})],
        ),
        ('Bearer realm="with \\"escaped\\" quotes"', [Challenge("bearer", {"realm": 'with "escaped" quotes'})]),
        ("Negotiate abc==, Basic realm=r", [Challenge("negotiate"), Challenge("basic", {"realm": "r"})]),
        ('BEARER REALM="x"', [Challenge("bearer", {"realm": "x"})]),
        ("", []),
    ],
)
def test_parse_www_authenticate(header: str, expected: list[Challenge]) -> None:
    assert parse_www_authenticate(header) == expected


def test_secrets_never_in_repr_or_str() -> None:
    credentials = Credentials(username="bob", password=SecretStr(SECRET))
    config = RegistryConfig(credentials=credentials)
    token_only = Credentials(identity_token=SecretStr(SECRET))
    for text in (
        repr(credentials),
        str(credentials),
        repr(config),
        str(config),
        repr(token_only),
        config.model_dump_json(),
    ):
        assert SECRET not in text
    assert "bob" in repr(credentials)
    assert credentials.password.get_secret_value() == SECRET


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match="username and password, or an identity token"):
        Credentials(username="only-user")
    with pytest.raises(ValidationError, match="scheme must be http or https"):
        RegistryConfig(mirrors=["ftp://mirror"])
    with pytest.raises(ValidationError, match="path is not supported"):
        RegistryConfig(mirrors=["https://mirror.example/v2/x"])
    with pytest.raises(ValidationError, match="without credentials") as refused:
        RegistryConfig(mirrors=[f"https://u:{SECRET}@mirror.example"])
    assert SECRET not in str(refused.value)
    with pytest.raises(ValidationError) as refused:
        Credentials(password=SECRET)  # a plain string: pydantic would quote it as the input
    assert SECRET not in str(refused.value)
    assert RegistryConfig(mirrors=["https://mirror.example/"]).mirrors == ["https://mirror.example"]
    with pytest.raises(ValidationError):
        RegistryConfig(max_connections=0)


def test_explicit_config_wins(tmp_path: Path) -> None:
    explicit = Credentials(username="explicit", password=SecretStr("p"))
    environ = {"OCIMIRROR_REGISTRY_USERNAME_GHCR_IO": "env", "OCIMIRROR_REGISTRY_PASSWORD_GHCR_IO": "p"}
    found = lookup_credentials("ghcr.io", RegistryConfig(credentials=explicit), environ, tmp_path / "none.json")
    assert found == explicit


def test_environment_variables(tmp_path: Path) -> None:
    assert environment_key("127.0.0.1:5000") == "127_0_0_1_5000"
    assert environment_key("index.docker.io") == "DOCKER_IO"
    missing = tmp_path / "none.json"
    environ = {
        "OCIMIRROR_REGISTRY_USERNAME_127_0_0_1_5000": "envuser",
        "OCIMIRROR_REGISTRY_PASSWORD_127_0_0_1_5000": SECRET,
        "OCIMIRROR_REGISTRY_IDENTITY_TOKEN_DOCKER_IO": SECRET,
    }
    found = lookup_credentials("127.0.0.1:5000", None, environ, missing)
    assert found is not None and found.username == "envuser" and found.password.get_secret_value() == SECRET
    hub = lookup_credentials("docker.io", None, environ, missing)
    assert hub is not None and hub.identity_token.get_secret_value() == SECRET
    assert lookup_credentials("other.example", None, environ, missing) is None
    with pytest.raises(ConfigError, match="must be set together"):
        lookup_credentials("x.example", None, {"OCIMIRROR_REGISTRY_USERNAME_X_EXAMPLE": "u"}, missing)


def write_config(directory: Path, document: dict[str, object]) -> Path:
    path = directory / "config.json"
    path.write_text(json.dumps(document))
    return path


def test_docker_config_auths(tmp_path: Path) -> None:
    auth = base64.b64encode(f"bob:{SECRET}".encode()).decode()
    path = write_config(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": auth},
                "registry.example:5000": {"auth": auth},
                "https://tokens.example/v2/": {"identitytoken": "id-token"},
                "broken.example": {"auth": "!!notbase64"},
            }
        },
    )
    hub = lookup_credentials("docker.io", None, {}, path)
    assert hub is not None and hub.username == "bob" and hub.password.get_secret_value() == SECRET
    assert lookup_credentials("registry.example:5000", None, {}, path) == hub
    token = lookup_credentials("tokens.example", None, {}, path)
    assert token is not None and token.identity_token.get_secret_value() == "id-token"
    assert lookup_credentials("unknown.example", None, {}, path) is None
    with pytest.raises(ConfigError, match=r"broken\.example") as caught:
        lookup_credentials("broken.example", None, {}, path)
    assert "notbase64" not in str(caught.value)


def test_docker_config_from_environment_directory(tmp_path: Path) -> None:
    auth = base64.b64encode(b"carol:pw").decode()
    write_config(tmp_path, {"auths": {"env.example": {"auth": auth}}})
    found = lookup_credentials("env.example", None, {"DOCKER_CONFIG": str(tmp_path)})
    assert found is not None and found.username == "carol"


def install_helper(directory: Path, name: str, store: dict[str, dict[str, str]]) -> dict[str, str]:
    """Write a real docker-credential-<name> program answering ``get`` from ``store``; returns an environ
    with it first on PATH. It logs every server URL it was asked about to ``asked.log``."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    program = bin_dir / f"docker-credential-{name}"
    program.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"store = {json.dumps(store)!r}\n"
        "server = sys.stdin.read().strip()\n"
        f"open({str(directory / 'asked.log')!r}, 'a').write(server + '\\n')\n"
        "entry = json.loads(store).get(server)\n"
        "if sys.argv[1:] != ['get'] or entry is None:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        "print(json.dumps(dict(ServerURL=server, **entry)))\n"
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_cred_helpers_and_creds_store(tmp_path: Path) -> None:
    environ = install_helper(
        tmp_path,
        "test",
        {
            "helped.example": {"Username": "helper-user", "Secret": SECRET},
            "https://index.docker.io/v1/": {"Username": "<token>", "Secret": "hub-identity-token"},
        },
    )
    fallback_auth = base64.b64encode(b"file-user:file-pw").decode()
    path = write_config(
        tmp_path,
        {
            "credHelpers": {"helped.example": "test"},
            "credsStore": "test",
            "auths": {"fileonly.example": {"auth": fallback_auth}},
        },
    )
    helped = lookup_credentials("helped.example", None, environ, path)
    assert helped is not None and helped.username == "helper-user"
    assert helped.password.get_secret_value() == SECRET
    hub = lookup_credentials("docker.io", None, environ, path)
    assert hub is not None and hub.identity_token.get_secret_value() == "hub-identity-token"
    # The store has nothing for this host: the auths entry is used.
    fileonly = lookup_credentials("fileonly.example", None, environ, path)
    assert fileonly is not None and fileonly.username == "file-user"
    assert lookup_credentials("nowhere.example", None, environ, path) is None
    asked = (tmp_path / "asked.log").read_text().split()
    assert asked == ["helped.example", "https://index.docker.io/v1/", "fileonly.example", "nowhere.example"]


def test_missing_helper_is_a_clear_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"credHelpers": {"x.example": "does-not-exist"}})
    with pytest.raises(ConfigError, match=r"docker-credential-does-not-exist .* not found on PATH"):
        lookup_credentials("x.example", None, {"PATH": str(tmp_path)}, path)
    bad = write_config(tmp_path, {"credsStore": "../evil"})
    with pytest.raises(ConfigError, match="not a plain program suffix"):
        lookup_credentials("x.example", None, {}, bad)
