"""``mirror_sync``: keep a set of images mirrored in a store, as one Prefect flow run.

The flow plans first (``ocimirror.plan``: list tags where the config selects by pattern, version or
recency; resolve every reference; compare with the store), then fetches every changed image at once
(``flows.mirroring``). An image whose resolved digest is already tagged costs one manifest request and no
task run. A failing image does not stop the others: finished images stay committed and tagged, and the
run ends Failed with a ``SyncFailed`` that names each failed image and carries the whole result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, State
from prefect.task_runners import ThreadPoolTaskRunner

from ocimirror.config import MirrorConfig, load_config, parse_config
from ocimirror.errors import ConfigError
from ocimirror.plan import plan_config
from ocimirror.prune import apply_prunes, plan_prunes
from ocimirror.report import SyncResult
from ocimirror.store.layout import redact_url
from tasks.clients import Target
from tasks.maintenance import store_slot

from .fanout import DEFAULT_DEPLOYMENT, fan_out_planned
from .mirroring import MAX_CONCURRENCY, final_state, log_plan, mirror_planned, summary_artifact


def load(config: MirrorConfig | dict[str, Any] | str) -> MirrorConfig:
    """A config from a MirrorConfig, its dict form, its JSON text (what the UI's text field holds) or the
    path of its YAML file."""
    if isinstance(config, MirrorConfig):
        return config
    if isinstance(config, str) and config.lstrip().startswith("{"):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config parameter is not valid JSON: {error}") from None
    if isinstance(config, str):
        return load_config(Path(config))
    return parse_config(config, source="config parameter")


def _run_name() -> str:
    """``sync dockerhub-base.yaml`` or ``sync s3://bucket/oci``: what was synced, not a random name."""
    config = flow_run.parameters.get("config")
    dry = " (dry run)" if flow_run.parameters.get("dry_run") else ""
    if isinstance(config, str) and not config.lstrip().startswith("{"):
        return f"sync {Path(config).name}{dry}"
    try:
        return f"sync {redact_url(load(config).store.url)}{dry}"
    except (ConfigError, ValueError, TypeError):
        return f"sync{dry}"


@flow(
    name="mirror-sync",
    flow_run_name=_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY),
    validate_parameters=False,
)
def mirror_sync(
    config: MirrorConfig | dict[str, Any] | str,
    dry_run: bool = False,
    fan_out: bool | None = None,
    deployment: str = DEFAULT_DEPLOYMENT,
) -> State[Any]:
    """Mirror every image of ``config``: a MirrorConfig, its dict or JSON form, or a path to its YAML file.

    With ``dry_run`` the plan is returned and shown as an artifact, and nothing is written. With
    ``fan_out`` (default: the config's ``fan_out``) each changed image runs as a run of ``deployment``
    (``flow/deployment``) on that deployment's work pool, instead of in this run (``flows.fanout``).
    """
    logger = get_run_logger()
    config = load(config)
    target = Target(store=config.store, registries=config.registries, concurrency=config.concurrency)
    store = target.open_store()
    planned = plan_config(config, target.registry(), store)
    prunes = plan_prunes(config, planned, store)
    if dry_run:
        names = [name for plan in prunes for name in plan.names]
        result = SyncResult(dry_run=True, images=[image.outcome() for image in planned], pruned=names)
        log_plan(logger, planned)
        for name in names:
            logger.info("plan: prune %s", name)
        create_markdown_artifact(key="mirror-sync-plan", markdown=_plan_markdown(result), description="Dry-run plan")
        return Completed(message=f"dry run: {result.summary()}", data=result)
    with store_slot(config.store):  # never at the same time as maintenance (gc, repair) of this store
        if config.fan_out if fan_out is None else fan_out:
            result = fan_out_planned(planned, target, logger, deployment)
        else:
            result = mirror_planned(planned, target, logger)
        result = result.model_copy(update={"pruned": apply_prunes(store, prunes, result.images)})
    for name in result.pruned:
        logger.info("pruned %s", name)
    summary_artifact(result, key="mirror-sync")
    return final_state(result)


def _plan_markdown(result: SyncResult) -> str:
    lines = ["| reference | status | referrers | error | digest |", "|---|---|---|---|---|"]
    lines += [
        f"| {o.reference} | {o.status} | {len(o.referrers)} | {o.error or ''} | {(o.source_digest or '')[:19]} |"
        for o in result.images
    ]
    lines += [f"| {name} | prune | | | |" for name in result.pruned]
    return "\n".join(lines)
