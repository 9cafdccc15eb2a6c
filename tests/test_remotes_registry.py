"""The registry client against real distribution registries: resolve, fetch, auth, tags, mirrors."""

from __future__ import annotations

import base64
import json
import pickle
import random
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from pydantic import SecretStr

from ocimirror import mediatypes
from ocimirror.content import Status, Writer, copy_content, read_blob
from ocimirror.descriptor import Descriptor
from ocimirror.digest import Verifier
from ocimirror.errors import AlreadyExists, ConfigError, DigestMismatch, NotFound, PermanentError, Unauthorized
from ocimirror.remotes.config import Credentials, RegistryConfig
from ocimirror.remotes.reference import parse_reference
from ocimirror.remotes.registry import Registry
from ocimirror_demo.images import Image, build_manifest, push_image, random_layer
from ocimirror_demo.registry import LocalRegistry, free_port
from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.fixtures.registry import AuthenticatedRegistry, SeededRegistry, TokenRegistry, TokenServer

pytestmark = pytest.mark.registry


class MemoryWriter:
    """A verifying in-memory Writer: content becomes visible in ``committed`` only if it checks out."""

    def __init__(self, committed: dict[str, bytes], descriptor: Descriptor) -> None:
        self._committed = committed
        self._descriptor = descriptor
        self._verifier = Verifier(descriptor.digest, descriptor.size)
        self._parts: list[bytes] = []

    @property
    def offset(self) -> int:
        return self._verifier.offset

    def write(self, chunk: bytes) -> None:
        self._verifier.update(chunk)
        self._parts.append(chunk)

    def commit(self) -> None:
        self._verifier.verify()
        self._committed[self._descriptor.digest] = b"".join(self._parts)

    def close(self) -> None:
        pass


class MemoryIngester:
    """A tiny Ingester keeping committed blobs in a dict."""

    def __init__(self) -> None:
        self.committed: dict[str, bytes] = {}

    def writer(self, ref: str, descriptor: Descriptor) -> Writer:
        if descriptor.digest in self.committed:
            raise AlreadyExists(ref)
        return MemoryWriter(self.committed, descriptor)

    def statuses(self) -> list[Status]:
        return []


def with_credentials(host: str, username: str, password: str, **options: object) -> dict[str, RegistryConfig]:
    credentials = Credentials(username=username, password=SecretStr(password))
    return {host: RegistryConfig(credentials=credentials, **options)}


# ------------------------------------------------------------------------------------------------- resolve


@pytest.mark.parametrize("name", ["test/multiarch:v1", "test/dockerlist:v1", "test/single:v1", "test/many:v1"])
def test_resolve_by_tag(seeded_registry: SeededRegistry, isolated_client, name: str) -> None:
    image = seeded_registry.images[name]
    descriptor = isolated_client().resolve(parse_reference(seeded_registry.reference(name)))
    assert (descriptor.media_type, descriptor.digest, descriptor.size) == (
        image.descriptor.media_type,
        image.digest,
        image.descriptor.size,
    )


def test_resolve_by_digest_and_tag_plus_digest(seeded_registry: SeededRegistry, isolated_client) -> None:
    image = seeded_registry.images["test/dockerlist:v1"]
    client = isolated_client()
    for text in (f"test/dockerlist@{image.digest}", f"test/dockerlist:v1@{image.digest}"):
        descriptor = client.resolve(parse_reference(seeded_registry.reference(text)))
        assert descriptor.digest == image.digest
        assert descriptor.media_type == mediatypes.DOCKER_MANIFEST_LIST


def test_resolve_falls_back_to_get_and_hash(fault_proxy: FaultProxy, seeded_registry, isolated_client) -> None:
    image = seeded_registry.images["test/multiarch:v1"]
    fault_proxy.add(Fault("strip_headers", "/manifests/", method="HEAD", times=None, strip=("Docker-Content-Digest",)))
    for text in ("test/multiarch:v1", f"test/multiarch@{image.digest}"):
        descriptor = isolated_client().resolve(parse_reference(f"{fault_proxy.host}/{text}"))
        assert (descriptor.digest, descriptor.size, descriptor.media_type) == (
            image.digest,
            image.descriptor.size,
            mediatypes.OCI_INDEX,
        )
    assert [r.method for r in fault_proxy.recorded(path_contains="/manifests/")] == ["HEAD", "GET"] * 2


def test_resolve_without_content_type_reads_the_body_media_type(fault_proxy, seeded_registry, isolated_client) -> None:
    image = seeded_registry.images["test/dockerlist:v1"]
    fault_proxy.add(Fault("strip_headers", "/manifests/", times=None, strip=("Content-Type",)))
    descriptor = isolated_client().resolve(parse_reference(f"{fault_proxy.host}/test/dockerlist:v1"))
    assert (descriptor.digest, descriptor.media_type) == (image.digest, mediatypes.DOCKER_MANIFEST_LIST)


def test_digest_reference_is_verified(fault_proxy: FaultProxy, seeded_registry, isolated_client) -> None:
    image = seeded_registry.images["test/single:v1"]
    fault_proxy.add(Fault("strip_headers", "/manifests/", method="HEAD", strip=("Docker-Content-Digest",)))
    fault_proxy.add(Fault("extend", "/manifests/", method="GET", extra=1))
    ref = parse_reference(f"{fault_proxy.host}/test/single@{image.digest}")
    with pytest.raises(DigestMismatch, match="test/single"):
        isolated_client().resolve(ref)


def test_not_found_names_registry_repository_and_reference(seeded_registry, isolated_client) -> None:
    client = isolated_client()
    with pytest.raises(NotFound) as caught:
        client.resolve(parse_reference(seeded_registry.reference("test/single:no-such-tag")))
    message = str(caught.value)
    assert seeded_registry.host in message and "test/single" in message and "no-such-tag" in message
    # Asked with HEAD, whose answer has no body: the status is known, the registry's codes are not.
    assert caught.value.status == 404 and caught.value.codes == ()
    with pytest.raises(NotFound, match="test/absent"):
        client.resolve(parse_reference(seeded_registry.reference("test/absent:v1")))


def test_registry_error_codes_are_attributes(seeded_registry, isolated_client) -> None:
    """Callers decide on status and distribution's error codes, never on the words of a message."""
    with pytest.raises(NotFound) as caught:
        isolated_client().tags(parse_reference(seeded_registry.reference("test/absent:v1")))
    assert caught.value.status == 404 and caught.value.codes == ("NAME_UNKNOWN",)
    assert caught.value.to_dict() == {
        "type": "NotFound",
        "message": str(caught.value),
        "transient": False,
        "status": 404,
        "codes": ["NAME_UNKNOWN"],
    }
    # Errors cross process boundaries in Prefect: the attributes survive pickling.
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (type(copy), str(copy), copy.status, copy.codes) == (NotFound, str(caught.value), 404, ("NAME_UNKNOWN",))


# --------------------------------------------------------------------------------------------------- fetch


@pytest.mark.parametrize(
    "name",
    sorted(
        [
            "test/multiarch:v1",
            "test/dockerlist:v1",
            "test/single:v1",
            "test/shared-a:v1",
            "test/shared-b:v1",
            "test/many:v1",
        ]
    ),
)
def test_fetch_every_descriptor_verified(seeded_registry: SeededRegistry, isolated_client, name: str) -> None:
    image = seeded_registry.images[name]
    ref = parse_reference(seeded_registry.reference(name))
    fetcher = isolated_client().fetcher(ref)
    ingester = MemoryIngester()
    descriptors = image.all_descriptors()
    transferred = sum(copy_content(fetcher, ingester, descriptor) for descriptor in descriptors)
    assert ingester.committed == {d.digest: image.blobs[d.digest] for d in descriptors}
    assert transferred == sum(d.size for d in descriptors)
    assert read_blob(fetcher, image.descriptor) == image.content
    # Resuming from an offset yields exactly the rest.
    layer = max(descriptors, key=lambda d: d.size)
    assert b"".join(fetcher.fetch(layer, layer.size // 3)) == image.blobs[layer.digest][layer.size // 3 :]
    assert list(fetcher.fetch(layer, layer.size)) == []


def test_fetch_missing_blob_is_not_found(seeded_registry: SeededRegistry, isolated_client) -> None:
    absent = Descriptor.from_bytes(mediatypes.OCI_LAYER_GZIP, b"never pushed")
    fetcher = isolated_client().fetcher(parse_reference(seeded_registry.reference("test/single:v1")))
    with pytest.raises(NotFound, match=f"test/single blob {absent.digest}") as caught:
        list(fetcher.fetch(absent))
    assert caught.value.status == 404 and caught.value.codes == ("BLOB_UNKNOWN",)


def test_an_empty_blob_reads_as_empty(seeded_registry: SeededRegistry, isolated_client) -> None:
    """Nothing is left to fetch, so no request is made; the empty stream still closes like any other."""
    empty = Descriptor.from_bytes(mediatypes.OCI_LAYER_GZIP, b"")
    fetcher = isolated_client().fetcher(parse_reference(seeded_registry.reference("test/single:v1")))
    assert read_blob(fetcher, empty) == b""


# ---------------------------------------------------------------------------------------------- basic auth


@pytest.fixture(scope="module")
def basic_image(basic_registry: AuthenticatedRegistry):
    image = build_manifest([random_layer(2048, "basic")])
    push_image(basic_registry.url, "private/app", "v1", image, session=basic_registry.session())
    return image


def test_basic_auth_pull(basic_registry: AuthenticatedRegistry, basic_image, isolated_client) -> None:
    configs = with_credentials(basic_registry.host, basic_registry.username, basic_registry.password)
    client = isolated_client(configs)
    ref = parse_reference(f"{basic_registry.host}/private/app:v1")
    assert client.resolve(ref).digest == basic_image.digest
    fetcher = client.fetcher(ref)
    for descriptor in basic_image.all_descriptors():
        assert read_blob(fetcher, descriptor, limit=1 << 20) == basic_image.blobs[descriptor.digest]


@pytest.mark.parametrize("password", [None, "wrong-password-xyz"])
def test_basic_auth_refused(basic_registry: AuthenticatedRegistry, basic_image, isolated_client, password) -> None:
    configs = with_credentials(basic_registry.host, basic_registry.username, password) if password else None
    ref = parse_reference(f"{basic_registry.host}/private/app:v1")
    with pytest.raises(Unauthorized) as caught:
        isolated_client(configs).resolve(ref)
    message = str(caught.value)
    assert basic_registry.host in message and "private/app" in message and "v1" in message and "401" in message
    assert "wrong-password-xyz" not in message and "wrong-password-xyz" not in repr(caught.value)
    assert caught.value.status == 401 and caught.value.to_dict()["status"] == 401
    assert "wrong-password-xyz" not in json.dumps(caught.value.to_dict())


def test_credentials_from_environment_reach_the_registry(basic_registry, basic_image, tmp_path: Path) -> None:
    key = basic_registry.host.replace(".", "_").replace(":", "_")
    environ = {
        f"OCIMIRROR_REGISTRY_USERNAME_{key}": basic_registry.username,
        f"OCIMIRROR_REGISTRY_PASSWORD_{key}": basic_registry.password,
    }
    with Registry(environ=environ, docker_config=tmp_path / "none.json") as client:
        assert client.resolve(parse_reference(f"{basic_registry.host}/private/app:v1")).digest == basic_image.digest


# ---------------------------------------------------------------------------------------------- token auth


@pytest.fixture(scope="module")
def token_images(token_registry: TokenRegistry):
    images = {
        "private/app": build_manifest([random_layer(2048, "token-private"), random_layer(1024, "token-p2")]),
        "public/app": build_manifest([random_layer(2048, "token-public")]),
    }
    for repository, image in images.items():
        token_registry.push(repository, "v1", image)
    return images


@pytest.fixture
def tokens(token_server: TokenServer) -> Iterator[TokenServer]:
    token_server.reset()
    yield token_server
    token_server.reset()


def pull_all(client: Registry, ref_text: str, image) -> None:
    ref = parse_reference(ref_text)
    assert client.resolve(ref).digest == image.digest
    fetcher = client.fetcher(ref)
    for descriptor in image.all_descriptors():
        assert read_blob(fetcher, descriptor, limit=1 << 20) == image.blobs[descriptor.digest]


def test_token_auth_with_password_reuses_one_token(token_registry, token_images, tokens, isolated_client) -> None:
    client = isolated_client(with_credentials(token_registry.host, token_registry.username, token_registry.password))
    pull_all(client, f"{token_registry.host}/private/app:v1", token_images["private/app"])
    pull_all(client, f"{token_registry.host}/private/app:v1", token_images["private/app"])
    assert tokens.count("alice", method="POST", grant_type="password") == 1
    assert len(tokens.requests) == 1
    assert tokens.requests[0].scopes == ["repository:private/app:pull"]
    # Another repository is another scope: one more token.
    pull_all(client, f"{token_registry.host}/public/app:v1", token_images["public/app"])
    assert len(tokens.requests) == 2


def test_token_post_refused_falls_back_to_get_with_basic(token_registry, token_images, tokens, isolated_client) -> None:
    tokens.post_status = 405
    client = isolated_client(with_credentials(token_registry.host, token_registry.username, token_registry.password))
    pull_all(client, f"{token_registry.host}/private/app:v1", token_images["private/app"])
    assert [(r.method, r.status) for r in tokens.requests] == [("POST", 405), ("GET", 200)]
    assert tokens.requests[1].username == "alice"


def test_token_with_identity_token(token_registry, token_images, tokens, isolated_client) -> None:
    credentials = Credentials(identity_token=SecretStr("alice-identity-token"))
    client = isolated_client({token_registry.host: RegistryConfig(credentials=credentials)})
    pull_all(client, f"{token_registry.host}/private/app:v1", token_images["private/app"])
    assert tokens.count("alice", method="POST", grant_type="refresh_token") == 1


def test_anonymous_token_pull_where_allowed(token_registry, token_images, tokens, isolated_client) -> None:
    client = isolated_client()
    pull_all(client, f"{token_registry.host}/public/app:v1", token_images["public/app"])
    assert tokens.count(None, method="GET") == 1
    # Anonymous tokens carry no access to private repositories: the registry refuses after the retry.
    with pytest.raises(Unauthorized, match="private/app"):
        client.resolve(parse_reference(f"{token_registry.host}/private/app:v1"))


def test_token_wrong_password(token_registry, token_images, tokens, isolated_client) -> None:
    client = isolated_client(with_credentials(token_registry.host, "alice", "not-her-password"))
    with pytest.raises(Unauthorized) as caught:
        client.resolve(parse_reference(f"{token_registry.host}/private/app:v1"))
    message = str(caught.value)
    assert token_registry.host in message and "private/app" in message and "'alice'" in message
    assert "not-her-password" not in message and "not-her-password" not in json.dumps(caught.value.to_dict())
    assert caught.value.status == 401  # the token server's answer
    assert [(r.method, r.status) for r in tokens.requests] == [("POST", 401), ("GET", 401)]


def test_refused_token_is_replaced_not_reused(token_registry, token_images, tokens, isolated_client) -> None:
    client = isolated_client(with_credentials(token_registry.host, token_registry.username, token_registry.password))
    public = parse_reference(f"{token_registry.host}/public/app:v1")
    tokens.expires_in = -120  # tokens are born expired (beyond distribution's 60 s leeway): the registry refuses
    try:
        with pytest.raises(Unauthorized, match="public/app"):
            client.resolve(public)
    finally:
        tokens.expires_in = 300
    # The refused token was not retried as-is: a second one was fetched before giving up.
    assert [r.status for r in tokens.requests] == [200, 200]
    assert client.resolve(public).digest == token_images["public/app"].digest
    assert len(tokens.requests) == 3


# ----------------------------------------------------------------------------------------- tags, catalog


def test_tags(seeded_registry: SeededRegistry, isolated_client) -> None:
    # distribution 2.8 ignores ``n`` on tag lists (pagination arrived in 3.0) and lists in storage order;
    # the Link-following code is the catalog's, exercised with real pages below.
    image = seeded_registry.images["test/single:v1"]
    session = requests.Session()
    for tag in ("t1", "t2", "t3", "t4", "t5"):
        push_image(seeded_registry.url, "test/paged", tag, image, session=session)
    tags = isolated_client().tags(parse_reference(seeded_registry.reference("test/paged")), page_size=2)
    assert sorted(tags) == ["t1", "t2", "t3", "t4", "t5"]
    with pytest.raises(NotFound, match="test/no-such-repository"):
        isolated_client().tags(parse_reference(seeded_registry.reference("test/no-such-repository")))


def test_catalog_paginated(seeded_registry: SeededRegistry, make_fault_proxy, isolated_client) -> None:
    proxy = make_fault_proxy(seeded_registry.url)
    repositories = isolated_client().catalog(proxy.host, page_size=2)
    assert {name.partition(":")[0] for name in seeded_registry.images} <= set(repositories)
    assert repositories == sorted(repositories) and len(set(repositories)) == len(repositories)
    pages = proxy.recorded(path_contains="/v2/_catalog")
    assert len(pages) == len(repositories) // 2 + 1
    assert all("n=2" in page.path for page in pages) and "last=" in pages[-1].path


# ---------------------------------------------------------------------------------------------------- mirrors


def test_mirror_without_content_falls_back_to_upstream(seeded_registry, make_fault_proxy, isolated_client) -> None:
    image = seeded_registry.images["test/shared-a:v1"]
    with LocalRegistry() as empty_mirror:
        mirror = make_fault_proxy(empty_mirror.url)
        client = isolated_client({seeded_registry.host: RegistryConfig(mirrors=[mirror.url])})
        pull_all(client, seeded_registry.reference("test/shared-a:v1"), image)
    asked = mirror.recorded(path_contains="/v2/test/shared-a/")
    assert len(asked) == 1 + len(image.all_descriptors())  # the HEAD and each fetch tried the mirror first
    assert all(urlencode({"ns": seeded_registry.host}) in r.path for r in asked)


def test_mirror_with_content_is_used(seeded_registry, make_fault_proxy, isolated_client) -> None:
    image = seeded_registry.images["test/many:v1"]
    upstream = make_fault_proxy(seeded_registry.url)
    with LocalRegistry() as full_mirror:
        push_image(full_mirror.url, "test/many", "v1", image)
        client = isolated_client({upstream.host: RegistryConfig(mirrors=[full_mirror.url])})
        pull_all(client, f"{upstream.host}/test/many:v1", image)
    assert upstream.recorded() == []


def test_unreachable_and_failing_mirrors_fall_back(seeded_registry, make_fault_proxy, isolated_client) -> None:
    from ocimirror.remotes.policy import make_retry

    image = seeded_registry.images["test/single:v1"]
    failing = make_fault_proxy(seeded_registry.url)
    failing.add(Fault("status", "/v2/test/", times=None, status=500))
    dead = f"http://127.0.0.1:{free_port()}"
    configs = {seeded_registry.host: RegistryConfig(mirrors=[dead, failing.url])}
    client = isolated_client(configs, retry=make_retry(total=1, backoff_factor=0))
    pull_all(client, seeded_registry.reference("test/single:v1"), image)
    assert failing.recorded()


def test_plain_http_only_for_loopback_or_insecure(isolated_client) -> None:
    hub = RegistryConfig(mirrors=["http://mirror.invalid"])
    client = isolated_client({"docker.io": hub})
    assert client.hosts.config_for("registry-1.docker.io") is hub  # Docker Hub's API host shares its settings
    with pytest.raises(ConfigError, match=r"plain HTTP to mirror\.invalid is refused"):
        client.resolve(parse_reference("alpine"))
    assert client.hosts.endpoints("localhost:5000")[-1].origin == "http://localhost:5000"
    assert client.hosts.endpoints("docker.io")[-1].origin == "https://registry-1.docker.io"
    insecure = isolated_client({"intranet.invalid": RegistryConfig(insecure=True)})
    assert insecure.hosts.endpoints("intranet.invalid")[-1].origin == "http://intranet.invalid"


def test_secrets_not_in_client_reprs(basic_registry, basic_image, isolated_client) -> None:
    configs = with_credentials(basic_registry.host, basic_registry.username, basic_registry.password)
    client = isolated_client(configs)
    ref = parse_reference(f"{basic_registry.host}/private/app:v1")
    fetcher = client.fetcher(ref)
    client.resolve(ref)
    transport = client.hosts.transport(f"http://{basic_registry.host}")
    encoded = base64.b64encode(f"{basic_registry.username}:{basic_registry.password}".encode()).decode()
    for text in (repr(client.hosts.configs), repr(fetcher), repr(transport), repr(transport.authorizer)):
        assert basic_registry.password not in text and encoded not in text


# ------------------------------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def tls_registry() -> Iterator[LocalRegistry]:
    with LocalRegistry(tls=True) as local:
        yield local


def test_tls_verified_against_ca_bundle(tls_registry: LocalRegistry, isolated_client) -> None:
    image = build_manifest([random_layer(1024, "tls")])
    push_image(tls_registry.url, "tls/app", "v1", image, session=_verified_session(tls_registry))
    ref = parse_reference(f"{tls_registry.host}/tls/app:v1")
    trusting = isolated_client({tls_registry.host: RegistryConfig(ca_bundle=str(tls_registry.ca_bundle))})
    assert trusting.hosts.endpoints(ref.registry)[-1].origin == tls_registry.url
    pull_all(trusting, str(ref), image)
    # Without the CA the same HTTPS endpoint is refused: verification is on by default.
    untrusting = isolated_client({tls_registry.host: RegistryConfig(mirrors=[tls_registry.url])})
    with pytest.raises(PermanentError, match="TLS verification failed") as caught:
        untrusting.resolve(ref)
    assert tls_registry.host in str(caught.value)
    # insecure: the user accepts any certificate from this host.
    insecure = isolated_client({tls_registry.host: RegistryConfig(mirrors=[tls_registry.url], insecure=True)})
    with pytest.warns(Warning, match="Unverified HTTPS"):
        assert insecure.resolve(ref).digest == image.digest


def _verified_session(local: LocalRegistry) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment would override verify
    session.verify = str(local.ca_bundle)
    return session


# ------------------------------------------------------------------------------------- connections, threads


def test_connections_are_reused(seeded_registry: SeededRegistry, make_fault_proxy, isolated_client) -> None:
    image = seeded_registry.images["test/many:v1"]
    proxy = make_fault_proxy(seeded_registry.url)
    pull_all(isolated_client(), f"{proxy.host}/test/many:v1", image)
    requests_seen = proxy.recorded()
    assert len(requests_seen) == 1 + len(image.all_descriptors())
    assert len({r.client_port for r in requests_seen}) == 1


def test_parallel_fetches_share_one_token(token_registry, token_images, tokens, isolated_client) -> None:
    # A fresh client: all eight threads meet the 401 challenge at once, and one of them fetches the token.
    client = isolated_client(with_credentials(token_registry.host, token_registry.username, token_registry.password))
    ref = parse_reference(f"{token_registry.host}/private/app:v1")
    image = token_images["private/app"]
    fetcher = client.fetcher(ref)
    descriptors = image.all_descriptors() * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda d: read_blob(fetcher, d, limit=1 << 20), descriptors))
    assert results == [image.blobs[d.digest] for d in descriptors]
    assert len(tokens.requests) == 1


def test_streaming_memory_is_flat_in_blob_size(seeded_registry: SeededRegistry, isolated_client) -> None:
    size = 24 * 1024 * 1024
    content = random.Random("flat").randbytes(size)
    blob = Descriptor.from_bytes(mediatypes.OCI_LAYER, content)
    push_image(seeded_registry.url, "test/big", None, Image(blob, {blob.digest: content}, descriptors=(blob,)))
    del content
    fetcher = isolated_client().fetcher(parse_reference(seeded_registry.reference("test/big:v1")))
    verifier = Verifier(blob.digest, blob.size)
    tracemalloc.start()
    try:
        for chunk in fetcher.fetch(blob):
            verifier.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    verifier.verify()
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while streaming {size} bytes"


def test_credential_helper_feeds_the_client(basic_registry, basic_image, tmp_path: Path) -> None:
    from tests.test_remotes_auth import install_helper, write_config

    secret = {"Username": basic_registry.username, "Secret": basic_registry.password}
    environ = install_helper(tmp_path, "test", {basic_registry.host: secret})
    config = write_config(tmp_path, {"credHelpers": {basic_registry.host: "test"}})
    with Registry(environ=environ, docker_config=config) as client:
        pull_all(client, f"{basic_registry.host}/private/app:v1", basic_image)
    # Asked once, on the first challenge, however many requests followed.
    assert (tmp_path / "asked.log").read_text().split() == [basic_registry.host]


def test_insecure_registry_still_verifies_a_token_server_on_another_host(
    tls_registry: LocalRegistry, seeded_registry: SeededRegistry, make_fault_proxy, isolated_client
) -> None:
    """``insecure`` is said of the registry's host; a TLS realm elsewhere that it names gets the password
    only after its certificate verifies (``[::ffff:127.0.0.1]`` is another host, on loopback)."""
    realm = f"https://[::ffff:127.0.0.1]:{tls_registry.host.rpartition(':')[2]}/token"
    proxy = make_fault_proxy(seeded_registry.url)
    challenge = f'Bearer realm="{realm}",service="s"'
    proxy.add(Fault("status", "/v2/", times=None, status=401, headers={"WWW-Authenticate": challenge}))
    credentials = Credentials(username="bob", password=SecretStr("hunter2"))
    client = isolated_client({proxy.host: RegistryConfig(insecure=True, credentials=credentials)})
    with pytest.raises(PermanentError, match="TLS verification failed"):
        client.resolve(parse_reference(f"{proxy.host}/test/single:v1"))
