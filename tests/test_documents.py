"""Digests, descriptors and manifest decoding: untrusted input is refused before it can do harm."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError

from ocimirror import mediatypes as mt
from ocimirror.descriptor import Descriptor, ref_key
from ocimirror.digest import Verifier, blob_path, digest_bytes, validate_digest
from ocimirror.errors import (
    DigestMismatch,
    DocumentTooLarge,
    InvalidDigest,
    InvalidManifest,
    SizeMismatch,
    UnsupportedSchema1,
)
from ocimirror.manifest import Index, Manifest, parse_document

GOOD = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../x",
        "sha256:" + "AB" * 32,
        "sha256:" + "a" * 63,
        "sha512:" + "a" * 64,
        "md5:" + "a" * 32,
        "sha256" + "a" * 64,
        "sha256:" + "a" * 63 + "/",
        "",
        "../sha256:" + "a" * 64,
    ],
)
def test_hostile_or_malformed_digests_are_refused(digest: str) -> None:
    with pytest.raises(InvalidDigest, match="invalid digest"):
        validate_digest(digest)
    with pytest.raises(ValidationError):
        Descriptor(media_type=mt.OCI_LAYER, digest=digest, size=1)


def test_blob_path_of_valid_digests() -> None:
    assert blob_path(GOOD) == f"blobs/sha256/{'ab' * 32}"
    assert blob_path("sha512:" + "c" * 128) == f"blobs/sha512/{'c' * 128}"


def test_verifier_refuses_first_extra_byte_and_wrong_content() -> None:
    verifier = Verifier(digest_bytes(b"hello"), 5)
    verifier.update(b"hel")
    with pytest.raises(SizeMismatch, match="longer than the declared size"):
        verifier.update(b"lo!")
    short = Verifier(digest_bytes(b"hello"), 5)
    short.update(b"hell")
    with pytest.raises(SizeMismatch, match="got 4 bytes"):
        short.verify()
    wrong = Verifier(digest_bytes(b"hello"), 5)
    wrong.update(b"jello")
    with pytest.raises(DigestMismatch, match="expected sha256:"):
        wrong.verify()


def test_descriptor_round_trips_spec_json_with_unknown_fields() -> None:
    raw = {
        "mediaType": mt.OCI_MANIFEST,
        "digest": GOOD,
        "size": 7,
        "platform": {"architecture": "arm64", "os": "linux", "variant": "v8", "os.version": "1"},
        "annotations": {"a": "b"},
        "x-future": 1,
    }
    descriptor = Descriptor.model_validate(raw)
    assert descriptor.platform is not None and descriptor.platform.os_version == "1"
    assert descriptor.to_json() == raw


def test_inline_data_is_used_only_when_it_checks_out() -> None:
    content = b"tiny config"
    good = Descriptor.from_bytes(mt.OCI_CONFIG, content, data=base64.b64encode(content).decode())
    assert good.inline_data() == content
    lying = good.model_copy(update={"data": base64.b64encode(b"other stuff").decode()})
    assert lying.inline_data() is None
    assert good.model_copy(update={"data": "!!not base64"}).inline_data() is None


@pytest.mark.parametrize(
    ("media_type", "prefix"),
    [
        (mt.OCI_MANIFEST, "manifest-"),
        (mt.DOCKER_MANIFEST, "manifest-"),
        (mt.OCI_INDEX, "index-"),
        (mt.DOCKER_MANIFEST_LIST, "index-"),
        (mt.OCI_LAYER_ZSTD, "layer-"),
        (mt.OCI_LAYER_NONDISTRIBUTABLE_GZIP, "layer-"),
        (mt.DOCKER_LAYER_FOREIGN_GZIP, "layer-"),
        (mt.OCI_CONFIG, "config-"),
        (mt.IN_TOTO, "attestation-"),
        ("application/x-whatever", "unknown-"),
    ],
)
def test_ref_keys_are_kind_and_digest(media_type: str, prefix: str) -> None:
    assert ref_key(Descriptor(media_type=media_type, digest=GOOD, size=1)) == prefix + GOOD


def _doc(body: dict) -> bytes:
    return json.dumps(body).encode()


CONFIG = {"mediaType": mt.OCI_CONFIG, "digest": GOOD, "size": 2}


def test_parse_manifest_and_index() -> None:
    manifest = parse_document(mt.OCI_MANIFEST, _doc({"schemaVersion": 2, "config": CONFIG, "layers": []}))
    assert isinstance(manifest, Manifest) and manifest.config.digest == GOOD
    index = parse_document(mt.DOCKER_MANIFEST_LIST, _doc({"schemaVersion": 2, "manifests": []}))
    assert isinstance(index, Index)


@pytest.mark.parametrize(
    ("media_type", "content", "error", "message"),
    [
        (mt.OCI_MANIFEST, b"{not json", InvalidManifest, "not valid JSON"),
        (mt.OCI_MANIFEST, b"[]", InvalidManifest, "JSON object"),
        (mt.OCI_MANIFEST, _doc({"schemaVersion": 2, "layers": []}), InvalidManifest, "config"),
        (mt.OCI_MANIFEST, _doc({"schemaVersion": 3, "config": CONFIG}), InvalidManifest, "schemaVersion"),
        (
            mt.OCI_MANIFEST,
            _doc({"schemaVersion": 2, "config": {**CONFIG, "digest": "sha256:../../etc/passwd"}}),
            InvalidManifest,
            "config.digest",
        ),
        (mt.DOCKER_SCHEMA1_MANIFEST, _doc({"schemaVersion": 1}), UnsupportedSchema1, "schema 1"),
        (mt.OCI_LAYER_GZIP, b"{}", InvalidManifest, "not a manifest or index"),
        (mt.OCI_MANIFEST, b" " * (mt.MAX_DOCUMENT_SIZE + 1), DocumentTooLarge, "exceeds"),
    ],
)
def test_parse_refuses_bad_documents(media_type: str, content: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        parse_document(media_type, content)
