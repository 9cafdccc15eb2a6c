"""Repair: fetch damaged or missing content again from the registries the store's images came from.

A blob of the right size but wrong bytes (bit rot, an outside writer) counts as present to every writer, so
no sync ever replaces it, and a damaged manifest fails every later sync of its image. ``verify`` finds these;
``repair_store`` re-fetches each from the source of an image that contains it (the image's recorded name
``registry/repo:tag`` says where it came from) through the store's normal verified commit path, replacing the
damaged copy atomically. It works level by level: a repaired manifest may reveal children that are missing
or damaged too, so verification runs again until nothing more can be done. What no source can supply is
reported with the names of the images that need it.
"""

from __future__ import annotations

from pydantic import BaseModel, computed_field

from .content import copy_content
from .descriptor import Descriptor
from .errors import InvalidReference, OcimirrorError
from .remotes import Registry
from .remotes.reference import parse_reference
from .store.layout import LayoutStore
from .verify import CORRUPT_BLOB, MISSING_BLOB, Fault, VerifyReport, image_name, verify_store, walk_image

#: Connections per registry host while repairing: few blobs, fetched one after the other.
REPAIR_CONNECTIONS = 4
#: Verification passes at most: a repaired index can reveal a damaged manifest, which reveals a layer.
MAX_ROUNDS = 4


class Unrepairable(BaseModel):
    """A fault that stays: the content, the images that need it, and why it could not be fetched."""

    kind: str
    digest: str
    images: list[str]
    detail: str

    def __str__(self) -> str:
        images = ", ".join(self.images) if self.images else "no image uses it (`ocimirror gc` removes it)"
        return f"{self.kind} {self.digest} needed by {images}: {self.detail}"


class RepairReport(BaseModel):
    """What was fetched again, what could not be, and the verification that followed."""

    repaired: list[Fault] = []
    unrepairable: list[Unrepairable] = []
    verify: VerifyReport

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.unrepairable and self.verify.ok


def _users(store: LayoutStore, untrusted: frozenset[str]) -> dict[str, tuple[Descriptor, list[str]]]:
    """For every descriptor of every image tree: the descriptor and the names of the images it is in."""
    users: dict[str, tuple[Descriptor, list[str]]] = {}
    for entry in store.images():
        name = image_name(entry)
        for descriptor in walk_image(store, entry, lambda fault: None, untrusted):
            images = users.setdefault(descriptor.digest, (descriptor, []))[1]
            if name not in images:
                images.append(name)
    return users


def _corrupt(report: VerifyReport) -> frozenset[str]:
    return frozenset(fault.digest for fault in report.faults if fault.kind == CORRUPT_BLOB)


def _fetch_again(
    store: LayoutStore, registry: Registry, descriptor: Descriptor, images: list[str], replace: bool
) -> str:
    """Copy ``descriptor`` from the source of the first image that can supply it; ``""`` on success, else
    what every source answered."""
    problems = []
    for name in images:
        try:
            reference = parse_reference(name)
        except InvalidReference:
            problems.append(f"{name}: not a registry reference")
            continue
        try:
            copy_content(registry.fetcher(reference), store.replacing() if replace else store, descriptor)
            return ""
        except (OcimirrorError, OSError) as error:
            problems.append(f"{reference.name}: {error}")
    return "; ".join(problems) or "no image names a source for it"


def repair_store(store: LayoutStore, registry: Registry, report: VerifyReport | None = None) -> RepairReport:
    """Fetch every corrupt or missing blob of the store's images again, then verify; ``report`` is a
    verification already made (else one is made first). Holds a write lease, like any writer."""
    report = report or verify_store(store)
    repaired: list[Fault] = []
    problems: dict[str, str] = {}
    with store.lease():
        for _ in range(MAX_ROUNDS):
            # Content under a damaged manifest is found only once the manifest is repaired: hence rounds.
            users = _users(store, _corrupt(report))
            todo = {
                fault.digest: fault
                for fault in report.faults
                if fault.kind in (CORRUPT_BLOB, MISSING_BLOB) and fault.digest in users and fault.digest not in problems
            }
            fixed = 0
            for fault in todo.values():
                descriptor, images = users[fault.digest]
                problem = _fetch_again(store, registry, descriptor, images, replace=fault.kind == CORRUPT_BLOB)
                if problem:
                    problems[fault.digest] = problem
                else:
                    repaired.append(fault)
                    fixed += 1
            if not fixed:
                break
            report = verify_store(store)
    users = _users(store, _corrupt(report))
    unrepairable: dict[str, Unrepairable] = {}
    for fault in report.faults:
        images = users[fault.digest][1] if fault.digest in users else [fault.reference] if fault.reference else []
        unrepairable.setdefault(
            fault.digest,
            Unrepairable(
                kind=fault.kind, digest=fault.digest, images=images, detail=problems.get(fault.digest, fault.detail)
            ),
        )
    return RepairReport(repaired=repaired, unrepairable=list(unrepairable.values()), verify=report)
