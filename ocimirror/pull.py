"""Pulling an image into a store without Prefect: fetch the tree, then tag it.

This is containerd's pull in miniature and the reference behaviour for the Prefect flow, which runs the
same handlers level by level as tasks. It also serves store-to-store copies, since a store is a Fetcher.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import cast

from . import mediatypes
from .content import Fetcher, copy_content, read_document
from .descriptor import Descriptor
from .errors import DamagedContent
from .handlers import CopyObserver, Handler, dispatch, fetch_handler, handlers
from .manifest import Index, encode_document
from .remotes.reference import Reference
from .selection import PlatformSelection
from .store import LayoutStore
from .store.lease import ensure_held


def recorded_name(reference: Reference) -> str:
    """The name an image is tagged under in a store: ``registry/repo:tag``, or ``registry/repo@digest`` when
    it has no tag. A digest pinned next to a tag only decides what is fetched."""
    return f"{reference.name}:{reference.tag}" if reference.tag else f"{reference.name}@{reference.digest}"


def pull_handler(
    fetcher: Fetcher, store: LayoutStore, selection: PlatformSelection, on_copied: CopyObserver | None = None
) -> Handler:
    """Fetch a descriptor into ``store``, then return the children ``selection`` keeps; ``on_copied`` hears
    the bytes fetched for each (see :func:`~ocimirror.handlers.fetch_handler`)."""
    children = healing_children(selection.children_handler(store), fetcher, store)
    return handlers(fetch_handler(store, fetcher, on_copied), children)


def healing_children(children: Handler, fetcher: Fetcher, store: LayoutStore) -> Handler:
    """``children``, except that a stored manifest or index that no longer hashes to its name (damaged after
    it was committed: it has the right size, so it counts as present) is fetched again from ``fetcher`` over
    the damaged copy, atomically and verified, and then read. Without this, every later sync of the image
    would fail on it."""

    def heal(descriptor: Descriptor) -> Sequence[Descriptor]:
        try:
            return children(descriptor)
        except DamagedContent:
            copy_content(fetcher, store.replacing(), descriptor)
            return children(descriptor)

    return heal


def pull(
    fetcher: Fetcher,
    store: LayoutStore,
    root: Descriptor,
    reference: str,
    selection: PlatformSelection | None = None,
    limit: int | None = 8,
    on_copied: CopyObserver | None = None,
) -> Descriptor:
    """Fetch the image under ``root`` into ``store`` and tag it ``reference``; return the tagged descriptor.

    The tag is written only after every blob of the selected tree is committed, so a failed pull leaves
    the previous tag (if any) in place and never points at an incomplete image. The whole pull holds a
    write lease, so ``gc`` never deletes a blob this pull committed or found present before it is tagged.
    ``on_copied`` is called (from the dispatch threads) with each descriptor and the bytes actually fetched.
    """
    selection = selection or PlatformSelection()
    with store.lease() as lease:
        dispatch(pull_handler(fetcher, store, selection, on_copied), [root], limit)
        ensure_held(lease, store)
        return tag_image(store, reference, root, selection)


def tag_image(store: LayoutStore, reference: str, root: Descriptor, selection: PlatformSelection) -> Descriptor:
    """Record ``reference`` in the store's index.json for a fetched ``root``.

    When the selection keeps only some platforms of an index, the tag points at a new index listing just
    those manifests, so the stored image is complete and readable by any OCI tool; the source digest is
    kept as an annotation.
    """
    target = root
    if selection.rewrites_index and mediatypes.is_index(root.media_type):
        target = write_filtered_index(store, root, selection)
    store.tag(reference, target, annotations=selection.annotations(root))
    return target


def write_filtered_index(store: LayoutStore, root: Descriptor, selection: PlatformSelection) -> Descriptor:
    """Store an index like ``root``'s with only the manifests ``selection`` keeps; return its descriptor."""
    document = cast(Index, read_document(store, root))  # an index media type always decodes to an Index
    filtered = document.model_copy(update={"manifests": selection.select(root, document.manifests)})
    content = encode_document(filtered)
    descriptor = Descriptor.from_bytes(root.media_type, content)
    # Inline data makes copy_content write ``content`` itself: one verified write path for every blob.
    copy_content(store, store, descriptor.model_copy(update={"data": base64.b64encode(content).decode()}))
    return descriptor
