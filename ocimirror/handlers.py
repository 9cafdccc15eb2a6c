"""Image handlers, after containerd's ``core/images/handlers.go``.

An image is a tree of descriptors. A *handler* takes one descriptor and returns its children; handlers
compose (``handlers``), wrap one another (``filter_platforms``, ``limit_manifests``), and a dispatcher
walks the tree with them (``walk`` sequentially, ``dispatch`` in parallel). Fetching a whole image is
``dispatch(handlers(fetch_handler(store, fetcher), children_handler(store)), root)``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from . import mediatypes
from .content import Fetcher, Ingester, copy_content, read_document
from .descriptor import Descriptor
from .errors import NotFound, UnsupportedSchema1
from .platforms import MatchComparer, Matcher

log = logging.getLogger(__name__)

#: A handler: a descriptor in, its children out. Any callable of this shape is one.
Handler = Callable[[Descriptor], Sequence[Descriptor]]

#: Threads ``dispatch`` uses when no limit is given.
DEFAULT_DISPATCH_WORKERS = 32


class StopHandler(Exception):
    """Raised by a handler in a ``handlers`` chain to end the chain for this descriptor, without error.

    The children returned by the handlers before it are kept.
    """


class SkipDescriptor(Exception):
    """Raised by a handler to leave this descriptor's children unvisited; siblings go on, and it counts
    as success."""


def handlers(*chain: Handler) -> Handler:
    """Run ``chain`` in order on each descriptor and concatenate their children."""

    def handle(descriptor: Descriptor) -> list[Descriptor]:
        children: list[Descriptor] = []
        for handler in chain:
            try:
                children.extend(handler(descriptor))
            except StopHandler:
                break
        return children

    return handle


def walk(handler: Handler, descriptors: Iterable[Descriptor]) -> None:
    """Visit ``descriptors`` and their children depth-first, one at a time; the first error is raised."""
    for descriptor in descriptors:
        try:
            children = handler(descriptor)
        except SkipDescriptor:
            continue
        if children:
            walk(handler, children)


def dispatch(handler: Handler, descriptors: Iterable[Descriptor], limit: int | None = None) -> None:
    """Visit ``descriptors`` and their children with up to ``limit`` handlers running at once.

    Siblings run in parallel. Each content is handled once per dispatch (deduplicated by digest), which
    containerd does not do but a mirror of images that share layers needs. The first error cancels what
    has not started yet and is raised once everything running has finished. A worker never waits on its
    children: it queues them and returns, so its slot is free before they run and no depth of tree can
    deadlock a small limit.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"dispatch limit must be at least 1, got {limit}")
    seen: set[str] = set()
    errors: list[BaseException] = []
    cancelled = threading.Event()
    idle = threading.Condition()
    pending = 0

    with ThreadPoolExecutor(max_workers=limit or DEFAULT_DISPATCH_WORKERS, thread_name_prefix="dispatch") as pool:

        def submit(batch: Iterable[Descriptor]) -> None:
            nonlocal pending
            for descriptor in batch:
                with idle:
                    if cancelled.is_set() or descriptor.digest in seen:
                        continue
                    seen.add(descriptor.digest)
                    pending += 1
                pool.submit(run, descriptor)

        def run(descriptor: Descriptor) -> None:
            nonlocal pending
            try:
                if not cancelled.is_set():
                    submit(handler(descriptor))
            except SkipDescriptor:
                pass
            except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
                with idle:
                    errors.append(error)
                cancelled.set()
            finally:
                with idle:
                    pending -= 1
                    if pending == 0:
                        idle.notify_all()

        submit(descriptors)
        with idle:
            idle.wait_for(lambda: pending == 0)
    if errors:
        raise errors[0]


def children_handler(provider: Fetcher) -> Handler:
    """Children of manifests (config, then layers) and indexes (manifests), read from ``provider``.

    The body is validated against the declared media type; Docker schema 1 is refused; blobs of known
    childless types have none; unknown types are logged and treated as leaves.
    """

    def children(descriptor: Descriptor) -> list[Descriptor]:
        _refuse_schema1(descriptor)
        media_type = descriptor.media_type
        if mediatypes.is_document(media_type):
            return read_document(provider, descriptor).children()
        if not (mediatypes.is_layer(media_type) or mediatypes.is_config(media_type)):
            log.debug("%s has unknown media type %s; treating it as a leaf", descriptor.digest, media_type)
        return []

    return children


#: Called by ``fetch_handler`` after each copy with the descriptor and the bytes actually fetched for it.
CopyObserver = Callable[[Descriptor, int], None]


def fetch_handler(ingester: Ingester, fetcher: Fetcher, on_copied: CopyObserver | None = None) -> Handler:
    """Copy each descriptor's content from ``fetcher`` into ``ingester``; returns no children.

    Content already committed is success (``copy_content`` returns at once), so re-running a fetch only
    costs the existence checks. ``on_copied`` hears of every copy with the bytes that moved for it (0 for
    content already present, the rest only for a resumed ingest): what transfer reports should add up.
    """

    def fetch(descriptor: Descriptor) -> list[Descriptor]:
        _refuse_schema1(descriptor)
        fetched = copy_content(fetcher, ingester, descriptor)
        if on_copied is not None:
            on_copied(descriptor, fetched)
        return []

    return fetch


def _refuse_schema1(descriptor: Descriptor) -> None:
    """Schema 1 is refused before any byte of it is fetched or parsed: it cannot be stored as OCI content."""
    if mediatypes.is_schema1(descriptor.media_type):
        raise UnsupportedSchema1(
            f"{descriptor.digest}: Docker schema 1 manifests ({descriptor.media_type}) are not supported"
        )


def filter_platforms(handler: Handler, matcher: Matcher | None) -> Handler:
    """Keep the children that have no platform or a platform ``matcher`` accepts."""

    def filtered(descriptor: Descriptor) -> list[Descriptor]:
        children = list(handler(descriptor))
        if matcher is None:
            return children
        return [child for child in children if child.platform is None or matcher.match(child.platform)]

    return filtered


def limit_manifests(handler: Handler, comparer: MatchComparer, n: int) -> Handler:
    """Under an index, order children by platform preference (stable; no platform last) and keep ``n``.

    ``n <= 0`` only orders. Nothing left under an index is ``NotFound``. Children of anything but an index
    pass through unchanged.
    """

    def limited(descriptor: Descriptor) -> list[Descriptor]:
        children = list(handler(descriptor))
        if not mediatypes.is_index(descriptor.media_type):
            return children
        children = _sorted_by_preference(children, comparer)
        if n > 0:
            if not children:
                raise NotFound(f"{descriptor.digest}: no manifest matches the requested platform")
            children = children[:n]
        return children

    return limited


def _sorted_by_preference(children: list[Descriptor], comparer: MatchComparer) -> list[Descriptor]:
    """Stable insertion sort with ``comparer.less`` (platforms are few; ``less`` is not a key function)."""
    ordered: list[Descriptor] = []
    for child in children:
        position = len(ordered)
        while position > 0 and _prefers(comparer, child, ordered[position - 1]):
            position -= 1
        ordered.insert(position, child)
    return ordered


def _prefers(comparer: MatchComparer, a: Descriptor, b: Descriptor) -> bool:
    if a.platform is None:
        return False
    if b.platform is None:
        return True
    return comparer.less(a.platform, b.platform)


def filter_manifest_by_platform(handler: Handler, matcher: Matcher | None) -> Handler:
    """Metadata for every platform, layers only for matching ones (containerd's
    ``FilterManifestByPlatformHandler``).

    A manifest whose descriptor carries a non-matching platform keeps only its config, so every manifest
    and config of an index is fetched and the index digest stays valid, while foreign layers are skipped.
    """

    def filtered(descriptor: Descriptor) -> list[Descriptor]:
        children = list(handler(descriptor))
        if matcher is None or descriptor.platform is None or not mediatypes.is_manifest(descriptor.media_type):
            return children
        if matcher.match(descriptor.platform):
            return children
        return [child for child in children if mediatypes.is_config(child.media_type)]

    return filtered
