"""``ls``, ``verify``, ``rm``, ``gc`` and ``schema``: reading and maintaining a store with the core alone."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ocimirror.errors import ConfigError
from ocimirror.report import human_size
from ocimirror.store.layout import REF_NAME
from ocimirror.text import printable

if TYPE_CHECKING:
    pass

from .app import (
    EXIT_FAILED,
    EXIT_USAGE,
    JsonOption,
    StorageOption,
    StoreArgument,
    app,
    console,
    fail,
    inspect_store,
)


@app.command("ls")
def list_store(
    store: StoreArgument,
    storage_option: StorageOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the images in STORE: reference, digest, platforms, size, referrers (signatures, SBOMs...)."""
    from ocimirror.verify import list_images

    images = inspect_store(store, storage_option, list_images)
    if as_json:
        print(json.dumps([image.model_dump() for image in images], indent=2))
        return
    if console.is_terminal:
        table = Table("reference", "digest", "platforms", "size", "referrers")
        for image in images:
            platforms = printable(",".join(image.platforms))
            row = (image.digest, escape(platforms), human_size(image.size), str(image.referrers))
            table.add_row(escape(printable(image.reference)), *row)
        Console().print(table)
        return
    for image in images:
        platforms = printable(",".join(image.platforms)) or "-"
        print(f"{printable(image.reference)}\t{image.digest}\t{platforms}\t{image.size}\t{image.referrers}")


@app.command()
def verify(
    store: StoreArgument,
    repair: Annotated[
        bool, typer.Option("--repair", help="Fetch damaged or missing content again from the images' registries.")
    ] = False,
    config: Annotated[
        str | None,
        typer.Option(metavar="CONFIG.yaml", help="Mirror config whose registries settings --repair uses."),
    ] = None,
    storage_option: StorageOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-hash every blob in STORE and check every tagged image is complete; exit 1 on any fault."""
    from ocimirror.verify import verify_store

    registries = _registries(config)
    report = inspect_store(store, storage_option, verify_store)
    if repair and not report.ok:
        _repair(store, storage_option, report, registries, as_json)
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        for fault in report.faults:
            print(f"FAULT {printable(fault)}")
        print(f"{'ok' if report.ok else 'FAILED'}: {report.summary()}")
    raise typer.Exit(0 if report.ok else EXIT_FAILED)


def _registries(config: str | None) -> dict[str, Any]:
    """Registry client settings from a mirror config (credentials by env reference), or none."""
    from ocimirror.config import load_config, read_env_secret, registry_configs
    from ocimirror.repair import REPAIR_CONNECTIONS

    if config is None:
        return {}
    try:
        return registry_configs(load_config(config).registries, read_env_secret, REPAIR_CONNECTIONS)
    except ConfigError as error:
        raise fail(str(error), EXIT_USAGE) from None


def _repair(
    store: str, storage_option: list[str] | None, report: Any, registries: dict[str, Any], as_json: bool
) -> None:
    """``verify --repair`` once faults were found: fetch again, report, exit."""
    from ocimirror.remotes import Registry, RegistryConfig
    from ocimirror.repair import REPAIR_CONNECTIONS, repair_store

    with Registry(registries, default_config=RegistryConfig(max_connections=REPAIR_CONNECTIONS)) as registry:
        result = inspect_store(store, storage_option, lambda layout: repair_store(layout, registry, report))
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        for fault in result.repaired:
            print(f"REPAIRED {fault.kind} {fault.digest}")
        for problem in result.unrepairable:
            print(f"UNREPAIRABLE {problem}")
        print(f"{'ok' if result.ok else 'FAILED'}: {len(result.repaired)} repaired; {result.verify.summary()}")
    raise typer.Exit(0 if result.ok else EXIT_FAILED)


@app.command("rm")
def remove(
    store: Annotated[str, typer.Argument(metavar="STORE")],
    references: Annotated[list[str], typer.Argument(metavar="REFERENCE...", help="Images to untag.")],
    storage_option: StorageOption = None,
) -> None:
    """Untag REFERENCE... in STORE, all or none; `ocimirror gc` later frees what no tag reaches."""

    def untag(layout: Any) -> list[str]:
        layout.check_layout()
        names = {entry.annotations.get(REF_NAME) for entry in layout.images() if entry.annotations}
        return layout.untag(*[_stored_name(reference, names) for reference in references])

    for name in inspect_store(store, storage_option, untag):
        print(f"untagged {name}")


def _stored_name(reference: str, names: set[str]) -> str:
    """The name ``reference`` is recorded under: itself if a stored name, else its normalised form
    (``alpine:3.20`` -> ``docker.io/library/alpine:3.20``), as ``pull`` records images."""
    from ocimirror.pull import recorded_name
    from ocimirror.remotes import parse_reference

    if reference in names:
        return reference
    try:
        return recorded_name(parse_reference(reference))
    except ValueError:  # not a reference at all: reported as not tagged, under the name given
        return reference


@app.command()
def gc(
    store: Annotated[str, typer.Argument(metavar="STORE")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be freed; delete nothing.")] = False,
    grace: Annotated[
        str, typer.Option(metavar="DURATION", help="Keep unreachable blobs committed less than this long ago.")
    ] = "1h",
    wait: Annotated[
        str, typer.Option(metavar="DURATION", help="How long to wait for running syncs before giving up.")
    ] = "1h",
    storage_option: StorageOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete the blobs in STORE that no image reaches, and abandoned ingests; safe while syncs run."""
    from ocimirror.gc import collect_garbage, parse_duration

    try:
        grace_seconds, wait_seconds = parse_duration(grace), parse_duration(wait)
    except ValueError as error:
        raise fail(f"--grace/--wait: {error}", EXIT_USAGE) from None

    shown: list[set[str]] = [set()]

    def waiting(blockers: list[Any]) -> None:
        """Say who gc waits for, once per change (the check repeats every few seconds)."""
        names = {blocker.name for blocker in blockers}
        if names != shown[0]:
            shown[0] = names
            console.print(f"waiting for {len(names)} running writer(s) to finish: {', '.join(sorted(names))}")

    report = inspect_store(
        store,
        storage_option,
        lambda layout: collect_garbage(layout, grace_seconds, dry_run=dry_run, wait=wait_seconds, on_wait=waiting),
    )
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    for digest in report.deleted:
        print(f"{'would delete' if dry_run else 'deleted'} {digest}")
    print(report.summary())


@app.command()
def schema() -> None:
    """Print the JSON Schema of mirror configs (published as deployments/mirror-config.schema.json)."""
    from ocimirror.config import MirrorConfig

    print(json.dumps(MirrorConfig.model_json_schema(), indent=2))
