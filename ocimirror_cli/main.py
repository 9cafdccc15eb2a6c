"""``ocimirror``: the command-line contract of the README's "Command line" section.

``pull`` and ``sync`` run the Prefect flows (on the ephemeral server unless ``PREFECT_API_URL`` is set, so
runs show in whichever UI the user has); ``ls`` and ``verify`` read the store with the core alone. Output is
rich progress on a terminal, plain lines otherwise, one JSON document with ``--json``. Exit codes: 0 when
everything asked for is complete and verified, 1 when something failed, 2 for bad input.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import click
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Table
from typer.core import TyperCommand

from ocimirror import progress as progress_events
from ocimirror.errors import ConfigError, OcimirrorError
from ocimirror.report import ImageOutcome, SyncResult, describe_error, human_size
from ocimirror.store.layout import REF_NAME
from ocimirror.text import printable, printable_log_records

if TYPE_CHECKING:
    from ocimirror.config import StoreSettings

app = typer.Typer(
    name="ocimirror",
    help="Mirror OCI and Docker images into OCI image layouts on disk, S3 or GCS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",  # help texts are rich markup: a literal bracket is written `\\[`
)
#: Messages go to stderr and are never hard-wrapped: piped output is read by scripts, line by line.
console = Console(stderr=True, soft_wrap=True)
#: Registry messages and store contents reach the terminal through logs too: none may carry escapes.
printable_log_records()


class _ConsoleWarnings(logging.Handler):
    """The core's warnings (a wait on a lock held by another process, retries) on stderr, above any
    progress bars: Prefect's console handler is kept quiet (``_quiet_prefect``), and these are for the
    person waiting."""

    def emit(self, record: logging.LogRecord) -> None:
        console.print(f"[yellow]warning:[/yellow] {escape(printable(record.getMessage()))}", highlight=False)


logging.getLogger("ocimirror").addHandler(_ConsoleWarnings(logging.WARNING))
T = TypeVar("T")
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document with the results.")]
StoreArgument = Annotated[str, typer.Argument(metavar="STORE", help="A path or fsspec URL (s3://, gs://).")]
StorageOption = Annotated[
    list[str] | None,
    typer.Option("--storage-option", "-o", metavar="KEY=VALUE", help="fsspec storage option (repeatable)."),
]


def _storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as YAML scalars so ``anon=true`` is a boolean."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--storage-option")
        options[key] = yaml.safe_load(value) if value else ""
    return options


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


#: Storage options whose values are treated as secrets (s3fs ``key``/``secret``/``token``, gcsfs ``token``...).
_SECRET_OPTION = re.compile(r"key|secret|token|password|credential", re.IGNORECASE)


def _is_secret_option(key: str, value: object) -> bool:
    return bool(_SECRET_OPTION.search(key)) and isinstance(value, str)


def _quiet_prefect() -> None:
    """Keep Prefect's logs off the terminal (they would interleave with ours, and a 404 is not worth a
    traceback) while every run still sends them to the Prefect server. Set
    ``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL=INFO`` to see them here too."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no phoning home from a mirror tool
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # A first start on a new database can take over Prefect's default 20 s on a small machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@contextmanager
def _flow_run_settings() -> Iterator[None]:
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


def _fail(message: str, code: int) -> typer.Exit:
    """Print ``message`` (which may quote a registry or a store: made ``printable``) as one error line."""
    console.print(f"[red]error:[/red] {escape(printable(message))}", highlight=False)
    return typer.Exit(code)


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
        options = _storage_options(storage_option)
    except (ValueError, ConfigError) as error:
        raise _fail(str(error), EXIT_USAGE) from None
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
        raise _fail(str(error), EXIT_USAGE) from None
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
            raise _fail(describe_error(error), EXIT_FAILED) from None


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C: the engine has stopped its transfers; say what that left behind, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        message = "interrupted: no incomplete image was tagged; partial blobs resume next time"
        raise _fail(message, EXIT_INTERRUPTED) from None


def _on_prefect(run_flow: Callable[[], Any], as_json: bool) -> SyncResult:
    """Run a flow on the configured Prefect server (or an ephemeral one) and return its SyncResult."""
    _quiet_prefect()
    from ocimirror.report import SyncFailed

    with _interruptible(), _flow_run_settings(), _progress_display(console.is_terminal and not as_json):
        state = run_flow()
    _say_where(state)
    try:
        result = state.result()
    except SyncFailed as failed:
        return failed.result
    except Exception as error:  # noqa: BLE001 - the flow itself failed before reporting any image
        raise _fail(describe_error(error), EXIT_FAILED) from None
    if not isinstance(result, SyncResult):
        raise _fail(f"the flow returned {type(result).__name__}, not a sync result", EXIT_FAILED)
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


def _open(store: str, storage_option: list[str] | None):
    from ocimirror.store import open_store

    return open_store(store, _storage_options(storage_option))


def _inspect(store: str, storage_option: list[str] | None, action: Callable[[Any], T]) -> T:
    """Run a read-only core function on STORE; a broken store or a refusing filesystem is exit 1."""
    try:
        return action(_open(store, storage_option))
    except (OcimirrorError, OSError) as error:  # OSError: the filesystem refused (e.g. S3 403)
        raise _fail(str(error), EXIT_FAILED) from None


@app.command("ls")
def list_store(
    store: StoreArgument,
    storage_option: StorageOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the images in STORE: reference, digest, platforms, size, referrers (signatures, SBOMs...)."""
    from ocimirror.verify import list_images

    images = _inspect(store, storage_option, list_images)
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
    report = _inspect(store, storage_option, verify_store)
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
        raise _fail(str(error), EXIT_USAGE) from None


def _repair(
    store: str, storage_option: list[str] | None, report: Any, registries: dict[str, Any], as_json: bool
) -> None:
    """``verify --repair`` once faults were found: fetch again, report, exit."""
    from ocimirror.remotes import Registry, RegistryConfig
    from ocimirror.repair import REPAIR_CONNECTIONS, repair_store

    with Registry(registries, default_config=RegistryConfig(max_connections=REPAIR_CONNECTIONS)) as registry:
        result = _inspect(store, storage_option, lambda layout: repair_store(layout, registry, report))
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

    for name in _inspect(store, storage_option, untag):
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
        raise _fail(f"--grace/--wait: {error}", EXIT_USAGE) from None

    shown: list[set[str]] = [set()]

    def waiting(blockers: list[Any]) -> None:
        """Say who gc waits for, once per change (the check repeats every few seconds)."""
        names = {blocker.name for blocker in blockers}
        if names != shown[0]:
            shown[0] = names
            console.print(f"waiting for {len(names)} running writer(s) to finish: {', '.join(sorted(names))}")

    report = _inspect(
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


@app.command()
def serve(
    store: StoreArgument,
    listen: Annotated[str, typer.Option(metavar="HOST:PORT", help="Address to listen on.")] = "127.0.0.1:5000",
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="PREFIX=REGISTRY",
            help="Serve REGISTRY's repositories as PREFIX/... (repeatable), e.g. corp=registry.corp:5000.",
        ),
    ] = None,
    htpasswd: Annotated[
        str | None, typer.Option(metavar="FILE", help="Require Basic auth from this htpasswd file (bcrypt).")
    ] = None,
    tls_cert: Annotated[str | None, typer.Option(metavar="FILE", help="TLS certificate chain (PEM).")] = None,
    tls_key: Annotated[str | None, typer.Option(metavar="FILE", help="TLS private key (PEM).")] = None,
    storage_option: StorageOption = None,
) -> None:
    """Serve STORE read-only over the registry API: pull HOST:PORT/library/alpine:3.20."""
    import logging
    from pathlib import Path

    from ocimirror.serve import Htpasswd, Mapping, NameMap, RegistryApp, RegistryServer, TLSFiles

    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise _fail(f"--listen {listen!r}: expected HOST:PORT", EXIT_USAGE)
    if (tls_cert is None) != (tls_key is None):
        raise _fail("--tls-cert and --tls-key go together", EXIT_USAGE)
    try:
        names = NameMap([Mapping.parse(text) for text in mapping or []])
        users = Htpasswd.load(htpasswd) if htpasswd is not None else None
    except ConfigError as error:
        raise _fail(str(error), EXIT_USAGE) from None
    except OcimirrorError as error:  # a missing optional package
        raise _fail(str(error), EXIT_FAILED) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start-up chatter; errors still show
    try:
        layout = _open(store, storage_option)
        layout.check_layout()
        registry = RegistryApp(layout, names, users)
        tls = TLSFiles(Path(tls_cert), Path(tls_key)) if tls_cert and tls_key else None
        server = RegistryServer(registry, host.strip("[]") or "127.0.0.1", int(port), tls)
    except (OcimirrorError, OSError) as error:  # OSError: the filesystem refused (e.g. S3 403)
        raise _fail(str(error), EXIT_FAILED) from None
    console.print(f"serving {layout} at {server.url} (Ctrl-C to stop)", highlight=False)
    for registry_host in registry.unreachable_registries():
        console.print(
            f"note: images from {registry_host} have no name skopeo or Docker accept (only containerd's ?ns= "
            f"reaches them): add --map PREFIX={registry_host}",
            highlight=False,
        )
    server.run()


@app.command()
def demo(
    store: Annotated[str, typer.Option(metavar="DIR", help="Local directory for the demo store.")] = "./demo-store",
) -> None:
    """Mirror a sample image from a local registry (started here) into a local store, then verify it."""
    _quiet_prefect()
    from pathlib import Path

    from .demo import run_demo

    with _flow_run_settings():
        ok = run_demo(Path(store).resolve(), print)
    raise typer.Exit(0 if ok else EXIT_FAILED)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="ocimirror")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
