"""``pull`` and ``sync``: mirroring, in this process by default, as Prefect flows on request.

Without a Prefect API the core's planning and engine run here (``ocimirror.sync``; Prefect is never
imported). With ``PREFECT_API_URL`` set, or ``--prefect``, the same work runs as the ``pull`` and
``mirror-sync`` flows on that server (or an ephemeral one), and the command says where the run is. Output:
rich progress bars on a terminal, then one line an image; plain lines when piped; one JSON document with
``--json``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from typer.core import TyperCommand

from ocimirror import progress as progress_events
from ocimirror.errors import ConfigError, OcimirrorError
from ocimirror.report import ImageOutcome, SyncResult, describe_error, human_size
from ocimirror.text import printable

if TYPE_CHECKING:
    from ocimirror.config import StoreSettings

from .app import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    JsonOption,
    StorageOption,
    app,
    console,
    fail,
    storage_options,
)

#: Storage options whose values are treated as secrets (s3fs ``key``/``secret``/``token``, gcsfs ``token``...).
_SECRET_OPTION = re.compile(r"key|secret|token|password|credential", re.IGNORECASE)


def _prefect_requested(flag: bool) -> bool:
    """Run on Prefect when asked to, or when a Prefect API is configured in the environment (a profile-only
    setting needs ``--prefect``: reading profiles would import Prefect, 1.3 s, on every command)."""
    return flag or bool(os.environ.get("PREFECT_API_URL"))


def _store_for_flows(url: str, options: dict[str, Any]) -> StoreSettings:
    """The store as flow parameters, with the store object itself registered for this process.

    Options that look secret travel as references to names that are never set anywhere: the flow runs in
    this process and uses the registered store, so their values never reach the Prefect server, the UI,
    or the environment that credential helpers started later would inherit.
    """
    from ocimirror.config import SecretRef, StoreSettings
    from ocimirror.store import open_store
    from tasks.clients import register_store

    plain = {key: value for key, value in options.items() if not _is_secret_option(key, value)}
    secret = {
        key: SecretRef(env="OCIMIRROR_CLI_OPTION_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper())
        for key in options
        if key not in plain
    }
    settings = StoreSettings(url=url, options=plain, secret_options=secret)
    register_store(settings, open_store(url, options))
    return settings


def _is_secret_option(key: str, value: object) -> bool:
    return bool(_SECRET_OPTION.search(key)) and isinstance(value, str)


def quiet_prefect() -> None:
    """Keep Prefect's logs off the terminal (they would interleave with ours, and a 404 is not worth a
    traceback) while every run still sends them to the Prefect server. Set
    ``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL=INFO`` to see them here too."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no phoning home from a mirror tool
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # A first start on a new database can take over Prefect's default 20 s on a small machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@contextmanager
def flow_run_settings() -> Iterator[None]:
    """No flow-run heartbeats on the CLI's own ephemeral server: nobody watches that server once the
    command exits, and each run would wait ~1 s for the heartbeat thread. With a real server configured,
    heartbeats stay on, so a CLI run that is killed is marked crashed there."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    if get_current_settings().api.url:
        yield
        return
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@contextmanager
def _progress_display(enabled: bool) -> Iterator[None]:
    """Rich progress bars, one per image, fed by the flows' progress events, on a terminal only."""
    if not enabled:
        yield
        return
    bars = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console
    )
    tasks: dict[str, TaskID] = {}

    def show(event: progress_events.Progress) -> None:
        if event.reference not in tasks:
            tasks[event.reference] = bars.add_task(event.reference, total=event.bytes_total or None)
        bars.update(tasks[event.reference], completed=event.bytes_done, total=event.bytes_total or None)

    unsubscribe = progress_events.subscribe(show)
    try:
        with bars:
            yield
    finally:
        unsubscribe()


#: What ``--referrers`` given without a type stands for: every artifact type.
ALL_REFERRERS = "all"


class _OptionalTypeCommand(TyperCommand):
    """A command whose ``--referrers`` takes an optional value (``--referrers`` alone means every type), which
    typer cannot declare: a bare ``--referrers`` (last, or before another option, or before a word that is
    not a media type, such as a reference) gets ``all`` inserted. ``--referrers=TYPE`` is never ambiguous."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rewritten: list[str] = []
        for position, arg in enumerate(args):
            rewritten.append(arg)
            following = args[position + 1] if position + 1 < len(args) else None
            if arg == "--referrers" and (following is None or not _is_media_type(following)):
                rewritten.append(ALL_REFERRERS)
        return super().parse_args(ctx, rewritten)


def _is_media_type(word: str) -> bool:
    from ocimirror.mediatypes import validate_media_type

    if word == ALL_REFERRERS:
        return True
    try:
        for part in word.split(","):
            validate_media_type(part)
    except ValueError:
        return False
    return True


def _referrer_setting(values: list[str] | None) -> bool | list[str]:
    """``--referrers`` values as a config setting: ``all`` is every type; otherwise the (comma-separated)
    artifact types, checked like a config's."""
    from ocimirror.mediatypes import validate_media_type

    types = [part.strip() for value in values or [] for part in value.split(",") if part.strip()]
    if ALL_REFERRERS in types:
        return True
    return [validate_media_type(kind) for kind in dict.fromkeys(types)]


PrefectOption = Annotated[
    bool,
    typer.Option(
        "--prefect",
        help="Run as a Prefect flow: on the server at PREFECT_API_URL (implied when it is set), else on an "
        "ephemeral local one.",
    ),
]


@app.command(cls=_OptionalTypeCommand)
def pull(
    references: Annotated[list[str], typer.Argument(metavar="REFERENCE...", help="Images to mirror.")],
    to: Annotated[str, typer.Option("--to", metavar="STORE", help="Store: a path or fsspec URL (s3://, gs://).")],
    platform: Annotated[
        list[str] | None,
        typer.Option("--platform", metavar="OS/ARCH", help="os/arch\\[/variant] to keep (repeatable); default all."),
    ] = None,
    all_metadata: Annotated[
        bool, typer.Option("--all-metadata", help="Keep every manifest and config; limit only layers.")
    ] = False,
    referrers: Annotated[
        list[str] | None,
        typer.Option(
            "--referrers",
            metavar="[TYPE]",
            help="Mirror referrers too (signatures, SBOMs, attestations): alone, every artifact type; with TYPE "
            "(repeatable, or a comma list), those.",
        ),
    ] = None,
    storage_option: StorageOption = None,
    concurrency: Annotated[int, typer.Option(metavar="N", min=1, max=64, help="Fetches in flight.")] = 8,
    prefect: PrefectOption = False,
    as_json: JsonOption = False,
) -> None:
    """Mirror REFERENCE... into the store at --to, all at once, and tag each there."""
    from ocimirror.plan import ImageRequest
    from ocimirror.referrers import ReferrerSelection
    from ocimirror.remotes import parse_reference
    from ocimirror.selection import PlatformSelection

    try:  # bad input is refused before anything starts
        selection = PlatformSelection(platforms=platform or [], all_metadata=all_metadata)
        wanted = _referrer_setting(referrers)
        requests = [
            ImageRequest(reference=parse_reference(r), selection=selection, referrers=ReferrerSelection.of(wanted))
            for r in references
        ]
        options = storage_options(storage_option)
    except (ValueError, ConfigError) as error:
        raise fail(str(error), EXIT_USAGE) from None
    if _prefect_requested(prefect):
        store = _store_for_flows(to, options)

        def run_flow() -> Any:
            from flows.fetch import pull_images

            return pull_images(
                references=[str(request.reference) for request in requests],
                store=store,
                platforms=list(selection.platforms),
                all_metadata=all_metadata,
                concurrency=concurrency,
                referrers=wanted,
                return_state=True,
            )

        result = _on_prefect(run_flow, as_json)
    else:
        from ocimirror.store import open_store
        from ocimirror.sync import pull as pull_in_process

        with _progress_display(console.is_terminal and not as_json):
            result = _in_process(lambda: pull_in_process(requests, open_store(to, options), concurrency=concurrency))
    _report(result, as_json)


@app.command()
def sync(
    config: Annotated[str, typer.Argument(metavar="CONFIG.yaml", help="Mirror configuration file.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; write nothing.")] = False,
    prefect: PrefectOption = False,
    as_json: JsonOption = False,
) -> None:
    """Bring the store named in CONFIG.yaml up to date with every image it lists."""
    from ocimirror.config import load_config

    try:
        parsed = load_config(config)
    except ConfigError as error:
        raise fail(str(error), EXIT_USAGE) from None
    if _prefect_requested(prefect):

        def run_flow() -> Any:
            from flows.mirror import mirror_sync

            return mirror_sync(config=parsed, dry_run=dry_run, return_state=True)

        result = _on_prefect(run_flow, as_json)
    else:
        from ocimirror.sync import sync as sync_in_process

        with _progress_display(console.is_terminal and not as_json and not dry_run):
            result = _in_process(lambda: sync_in_process(parsed, dry_run=dry_run))
    _report(result, as_json)


def _in_process(run: Callable[[], SyncResult]) -> SyncResult:
    """Run the core's sync here; a store or registry that refuses before any image starts is exit 1."""
    with _interruptible():
        try:
            return run()
        except (OcimirrorError, OSError) as error:  # OSError: the filesystem refused (e.g. S3 403)
            raise fail(describe_error(error), EXIT_FAILED) from None


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C: the engine has stopped its transfers; say what that left behind, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        message = "interrupted: no incomplete image was tagged; partial blobs resume next time"
        raise fail(message, EXIT_INTERRUPTED) from None


def _on_prefect(run_flow: Callable[[], Any], as_json: bool) -> SyncResult:
    """Run a flow on the configured Prefect server (or an ephemeral one) and return its SyncResult."""
    quiet_prefect()
    from ocimirror.report import SyncFailed

    with _interruptible(), flow_run_settings(), _progress_display(console.is_terminal and not as_json):
        state = run_flow()
    _say_where(state)
    try:
        result = state.result()
    except SyncFailed as failed:
        return failed.result
    except Exception as error:  # noqa: BLE001 - the flow itself failed before reporting any image
        raise fail(describe_error(error), EXIT_FAILED) from None
    if not isinstance(result, SyncResult):
        raise fail(f"the flow returned {type(result).__name__}, not a sync result", EXIT_FAILED)
    return result


def _say_where(state: Any) -> None:
    """Where the run can be seen, when that is a server that outlives this command."""
    from prefect.settings import get_current_settings

    ui = get_current_settings().ui_url
    if os.environ.get("PREFECT_API_URL") and ui and state.state_details.flow_run_id:
        console.print(f"run: {ui}/runs/flow-run/{state.state_details.flow_run_id}", highlight=False)


def _report(result: SyncResult, as_json: bool) -> None:
    """Print the result (one line an image, or one JSON document) and exit 0, or 1 if any image failed."""
    if as_json:
        print(result.model_dump_json(indent=2, exclude={"images": {"__all__": {"result": {"tree"}}}}))
    else:
        for image in result.images:
            if image.status == "failed":
                failure = escape(printable(f"{image.reference}: {image.error or ''}"))
                console.print(f"[red]failed[/red]      {failure}", highlight=False)
            elif image.result is not None:
                r = image.result
                fetched = f"fetched {r.blobs_fetched} ({human_size(r.bytes_fetched)}), present {r.blobs_present}"
                print(printable(f"fetched     {image.reference} {r.digest} {fetched}{_referrer_words(image)}"))
            else:
                status = image.status.replace("-", " ")
                print(printable(f"{status:<11} {image.reference} {image.source_digest or ''}{_referrer_words(image)}"))
        for name in result.pruned:
            print(printable(f"{'to prune' if result.dry_run else 'pruned':<11} {name}"))
        console.print(result.summary(), highlight=False)
    raise typer.Exit(EXIT_FAILED if result.failed else 0)


def _referrer_words(image: ImageOutcome) -> str:
    """``, 2 referrer(s): application/vnd.example.sig, ...`` for an image with referrers, else nothing."""
    from ocimirror.referrers import describe_referrers

    return f", {describe_referrers(image.referrers)}" if image.referrers else ""
