"""A sync without Prefect: plan, then mirror every changed image at once on threads of this process.

What the command line runs when no Prefect API is configured, and what Python code can call directly.
The planning (``ocimirror.plan``) and the engine (``ocimirror.mirror``) are the very ones the Prefect flows
use; only the runner differs. Secrets come from the environment here (a Prefect Secret block needs a
Prefect run, and says so).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .config import MirrorConfig, RegistrySettings, SecretReader, StoreSettings, read_env_secret, registry_configs
from .mirror import Mirror
from .plan import ImageRequest, PlannedImage, plan, plan_config
from .prune import apply_prunes, plan_prunes
from .remotes import Registry, RegistryConfig
from .remotes.budget import LocalBudget, RequestBudget
from .report import ImageOutcome, SyncResult
from .store import LayoutStore, open_store
from .work import LocalRunner


def open_registry(
    registries: dict[str, RegistrySettings],
    max_connections: int,
    read_secret: SecretReader = read_env_secret,
    budget: RequestBudget | None = None,
) -> Registry:
    """A registry client for these per-host settings, with pools of ``max_connections`` for every host.

    Registries with a request budget in their settings draw from ``budget``; by default one of this
    process only (:class:`~.remotes.budget.LocalBudget`)."""
    return Registry(
        registry_configs(registries, read_secret, max_connections),
        default_config=RegistryConfig(max_connections=max_connections),
        budget=budget or LocalBudget(),
    )


def open_target(settings: StoreSettings, read_secret: SecretReader = read_env_secret) -> LayoutStore:
    """The store these settings name, with secret options read."""
    return open_store(settings.url, settings.storage_options(read_secret))


def run_plan(
    planned: Sequence[PlannedImage],
    registry: Registry,
    store: LayoutStore,
    concurrency: int,
    on_image: Callable[[ImageOutcome], None] | None = None,
) -> SyncResult:
    """Fetch and tag every planned image of ``planned`` in this process, all at once."""
    runner = LocalRunner(registry.fetcher, store, concurrency)
    try:
        return SyncResult(images=Mirror(store, runner, concurrency, on_image).run(planned))
    finally:
        runner.close()


def sync(
    config: MirrorConfig, dry_run: bool = False, on_image: Callable[[ImageOutcome], None] | None = None
) -> SyncResult:
    """Bring ``config``'s store up to date with every image it lists (``dry_run``: only plan)."""
    store = open_target(config.store)
    with open_registry(config.registries, config.concurrency) as registry:
        planned = plan_config(config, registry, store)
        prunes = plan_prunes(config, planned, store)
        if dry_run:
            names = [name for plan in prunes for name in plan.names]
            return SyncResult(dry_run=True, images=[image.outcome() for image in planned], pruned=names)
        result = run_plan(planned, registry, store, config.concurrency, on_image)
    return result.model_copy(update={"pruned": apply_prunes(store, prunes, result.images)})


def pull(
    requests: Sequence[ImageRequest],
    store: LayoutStore,
    registries: dict[str, RegistrySettings] | None = None,
    concurrency: int = 8,
    on_image: Callable[[ImageOutcome], None] | None = None,
) -> SyncResult:
    """Mirror the images ``requests`` name into ``store``, all at once."""
    with open_registry(registries or {}, concurrency) as registry:
        planned = plan(requests, registry, store, concurrency)
        return run_plan(planned, registry, store, concurrency, on_image)
