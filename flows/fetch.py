"""``fetch_image`` and ``pull_images``: mirror references named directly, without a config file.

The same plan and engine as ``mirror_sync`` (``flows.mirroring``): every reference is resolved and
compared with the store, and the changed ones are fetched at once in this one flow run. ``pull_images``
is what ``ocimirror pull --prefect`` runs; ``fetch_image`` is the one-image flow behind the
``fetch-image`` deployment, returning that image's result.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from ocimirror.config import RegistrySettings, StoreSettings
from ocimirror.plan import ImageRequest, plan
from ocimirror.referrers import ReferrerSelection
from ocimirror.remotes.reference import parse_reference
from ocimirror.report import FetchResult, SyncFailed, SyncResult
from ocimirror.selection import PlatformSelection
from tasks.clients import Target

from .mirroring import MAX_CONCURRENCY, final_state, mirror_planned, shorten_digests, summary_artifact


def _pull(
    references: list[str],
    store: StoreSettings | str,
    platforms: list[str] | None,
    all_metadata: bool,
    registries: dict[str, RegistrySettings] | None,
    concurrency: int,
    referrers: bool | list[str],
    refresh: bool = False,
) -> SyncResult:
    target = Target(
        store=StoreSettings(url=store) if isinstance(store, str) else store,
        registries=registries or {},
        concurrency=max(1, min(concurrency, MAX_CONCURRENCY)),
    )
    selection = PlatformSelection(platforms=platforms or [], all_metadata=all_metadata)
    wanted = ReferrerSelection.of(referrers)
    requests = [
        ImageRequest(reference=parse_reference(reference), selection=selection, referrers=wanted)
        for reference in references
    ]
    planned = plan(requests, target.registry(), target.open_store(), target.concurrency, refresh)
    return mirror_planned(planned, target, get_run_logger())


def _pull_run_name() -> str:
    references = flow_run.parameters.get("references") or []
    first = shorten_digests(str(references[0])) if references else ""
    return f"pull {first}" + (f" and {len(references) - 1} more" if len(references) > 1 else "")


@flow(
    name="pull",
    flow_run_name=_pull_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY),
    validate_parameters=True,
)
def pull_images(
    references: list[str],
    store: StoreSettings | str,
    platforms: list[str] | None = None,
    all_metadata: bool = False,
    registries: dict[str, RegistrySettings] | None = None,
    concurrency: int = 8,
    referrers: bool | list[str] = False,
) -> State[Any]:
    """Mirror every reference into ``store``, all at once, and tag each there.

    ``platforms`` limits images to those platforms (the best match for each, attestations included; the
    store gets an index of just those); with ``all_metadata`` every manifest and config is kept and only
    layers are limited, so the source's index digest is preserved. ``registries`` holds per-host settings
    (mirrors, TLS, credential references). ``concurrency`` bounds fetches in flight. ``referrers`` mirrors
    each image's referrers too (signatures, SBOMs): ``True`` all, or a list of artifact types.
    """
    result = _pull(references, store, platforms, all_metadata, registries, concurrency, referrers)
    summary_artifact(result, key="pull")
    return final_state(result)


def _fetch_run_name() -> str:
    return f"fetch {shorten_digests(str(flow_run.parameters.get('reference', '')))}"


@flow(
    name="fetch-image",
    flow_run_name=_fetch_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY),
    validate_parameters=True,
    persist_result=True,  # a fanning-out sync reads it (flows.fanout), from the result storage both share
)
def fetch_image(
    reference: str,
    store: StoreSettings | str,
    platforms: list[str] | None = None,
    all_metadata: bool = False,
    registries: dict[str, RegistrySettings] | None = None,
    concurrency: int = 8,
    referrers: bool | list[str] = False,
) -> FetchResult:
    """Mirror ``reference`` into ``store`` and tag it there; see :func:`pull_images` for the options.

    The tree is walked even when the image is already tagged at the same digest (content already present
    costs an existence check, no task run), so the result lists every descriptor.
    """
    result = _pull([reference], store, platforms, all_metadata, registries, concurrency, referrers, refresh=True)
    outcome = result.images[0]
    if outcome.result is None:
        raise SyncFailed(result)
    return outcome.result
