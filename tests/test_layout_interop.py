"""Interop with the real OCI layout tools: we read what skopeo writes, and skopeo and umoci read what we write.

The image is built by umoci (two inserted files, a config) and re-written by skopeo, so the source layout
is skopeo's own output. It is copied into a store of ours with ``copy_content`` per descriptor and tagged
with a full reference, which the tools must then accept as the image name.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ocimirror.content import read_blob, read_document
from ocimirror.descriptor import Descriptor
from ocimirror.store import LayoutStore, open_store
from ocimirror.store.layout import REF_NAME
from ocimirror.verify import list_images, verify_store
from tests.test_store import copy_tree, make_image, tree

pytestmark = pytest.mark.interop

REFERENCE = "docker.io/library/sample:1.0"


def run(*command: str | Path, cwd: Path | None = None) -> str:
    """Run a tool, failing the test with its stderr if it fails."""
    assert shutil.which(str(command[0])), f"{command[0]} is not installed (see .ci/run)"
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed: {result.stderr}"
    return result.stdout


@pytest.fixture
def skopeo_layout(tmp_path: Path) -> Path:
    """An image made by umoci in layout A, then copied by skopeo into layout B; returns B."""
    (tmp_path / "hello.txt").write_text("hello from umoci\n")
    (tmp_path / "second.txt").write_text("a second layer\n")
    run("umoci", "init", "--layout", "A", cwd=tmp_path)
    run("umoci", "new", "--image", "A:tag", cwd=tmp_path)
    run("umoci", "insert", "--image", "A:tag", "hello.txt", "/hello.txt", cwd=tmp_path)
    run("umoci", "insert", "--image", "A:tag", "second.txt", "/etc/second.txt", cwd=tmp_path)
    run(
        "umoci",
        "config",
        "--image",
        "A:tag",
        "--os",
        "linux",
        "--architecture",
        "amd64",
        "--config.cmd=/hello",
        cwd=tmp_path,
    )
    run("skopeo", "copy", "-q", "oci:A:tag", "oci:B:tag", cwd=tmp_path)
    return tmp_path / "B"


def import_image(source_path: Path, destination: LayoutStore, reference: str) -> Descriptor:
    """Copy the image tagged ``tag`` in ``source_path`` into ``destination`` and tag it ``reference``."""
    source = open_store(str(source_path))
    root = source.resolve("tag")
    copy_tree(source, destination, root)
    destination.tag(reference, root.model_copy(update={"annotations": None}))
    return root


def test_skopeo_layout_copied_into_our_store_is_readable_by_skopeo_and_umoci(
    skopeo_layout: Path, tmp_path: Path
) -> None:
    source = open_store(str(skopeo_layout))
    assert verify_store(source).ok, "a layout written by skopeo verifies"
    ours_path = tmp_path / "ours"
    ours = open_store(str(ours_path))
    root = import_image(skopeo_layout, ours, REFERENCE)
    assert verify_store(ours).ok
    [summary] = list_images(ours)
    assert (summary.reference, summary.platforms) == (REFERENCE, ["linux/amd64"])

    manifest = read_document(ours, root)
    inspected = json.loads(run("skopeo", "inspect", f"oci:{ours_path}:{REFERENCE}"))
    assert inspected["Digest"] == root.digest
    assert inspected["Layers"] == [layer.digest for layer in manifest.children()[1:]]
    assert (inspected["Os"], inspected["Architecture"]) == ("linux", "amd64")

    assert "umoci insert" in run("umoci", "stat", "--image", f"{ours_path}:{REFERENCE}")
    run("umoci", "unpack", "--rootless", "--image", f"{ours_path}:{REFERENCE}", tmp_path / "bundle")
    assert (tmp_path / "bundle" / "rootfs" / "hello.txt").read_text() == "hello from umoci\n"
    assert (tmp_path / "bundle" / "rootfs" / "etc" / "second.txt").read_text() == "a second layer\n"

    run("skopeo", "copy", "-q", f"oci:{ours_path}:{REFERENCE}", f"dir:{tmp_path / 'dir'}")
    assert (tmp_path / "dir" / "manifest.json").read_bytes() == read_blob(ours, root)


@pytest.mark.parametrize(
    "reference",
    ["docker.io/library/sample:1.0", "127.0.0.1:5000/team/app:v1", "ghcr.io/org/sub/image:2.0-rc.1"],
)
def test_full_references_are_accepted_as_ref_names(skopeo_layout: Path, tmp_path: Path, reference: str) -> None:
    ours_path = tmp_path / "ours"
    root = import_image(skopeo_layout, open_store(str(ours_path)), reference)
    assert json.loads(run("skopeo", "inspect", f"oci:{ours_path}:{reference}"))["Digest"] == root.digest
    assert reference in run("umoci", "ls", "--layout", ours_path)
    run("umoci", "stat", "--image", f"{ours_path}:{reference}")


def test_digest_references_are_accepted_as_ref_names(skopeo_layout: Path, tmp_path: Path) -> None:
    ours_path = tmp_path / "ours"
    ours = open_store(str(ours_path))
    root = import_image(skopeo_layout, ours, REFERENCE)
    by_digest = f"docker.io/library/sample@{root.digest}"
    ours.tag(by_digest, root)
    assert json.loads(run("skopeo", "inspect", f"oci:{ours_path}:{by_digest}"))["Digest"] == root.digest
    run("umoci", "stat", "--image", f"{ours_path}:{by_digest}")


def test_our_multi_platform_index_copies_with_skopeo_and_skopeo_entries_read_back(tmp_path: Path) -> None:
    ours_path = tmp_path / "ours"
    ours = open_store(str(ours_path))
    image = make_image(ours)
    ours.tag("docker.io/library/multi:1", image)
    run(
        "skopeo",
        "copy",
        "-q",
        "--all",
        "--preserve-digests",
        f"oci:{ours_path}:docker.io/library/multi:1",
        f"oci:{tmp_path / 'copy'}:multi",
    )
    copied = open_store(str(tmp_path / "copy"))
    assert copied.resolve("multi").digest == image.digest, "skopeo --preserve-digests keeps our index as written"
    assert sorted(copied.blobs()) == sorted(
        descriptor.digest for descriptor in {d.digest: d for d in tree(ours, image)}.values()
    )

    # skopeo rewrites our index.json when it adds a tag: our entries and annotations survive it.
    run("skopeo", "copy", "-q", f"oci:{tmp_path / 'copy'}:multi", f"oci:{ours_path}:docker.io/library/again:2")
    names = [entry.annotations[REF_NAME] for entry in ours.images() if entry.annotations]
    assert names == ["docker.io/library/multi:1", "docker.io/library/again:2"]
    amd64 = read_document(ours, image).children()[0]
    assert ours.resolve("docker.io/library/again:2").digest == amd64.digest, "skopeo picked this machine's platform"
    assert verify_store(ours).ok
