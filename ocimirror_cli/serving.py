"""``serve``: a store as a read-only registry for any client (``ocimirror.serve``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer

from ocimirror.errors import ConfigError, OcimirrorError

if TYPE_CHECKING:
    pass

from .app import (
    EXIT_FAILED,
    EXIT_USAGE,
    StorageOption,
    StoreArgument,
    app,
    console,
    fail,
    open_store_at,
)


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
    from pathlib import Path

    from ocimirror.serve import Htpasswd, Mapping, NameMap, RegistryApp, RegistryServer, TLSFiles

    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise fail(f"--listen {listen!r}: expected HOST:PORT", EXIT_USAGE)
    if (tls_cert is None) != (tls_key is None):
        raise fail("--tls-cert and --tls-key go together", EXIT_USAGE)
    try:
        names = NameMap([Mapping.parse(text) for text in mapping or []])
        users = Htpasswd.load(htpasswd) if htpasswd is not None else None
    except ConfigError as error:
        raise fail(str(error), EXIT_USAGE) from None
    except OcimirrorError as error:  # a missing optional package
        raise fail(str(error), EXIT_FAILED) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start-up chatter; errors still show
    try:
        layout = open_store_at(store, storage_option)
        layout.check_layout()
        registry = RegistryApp(layout, names, users)
        tls = TLSFiles(Path(tls_cert), Path(tls_key)) if tls_cert and tls_key else None
        server = RegistryServer(registry, host.strip("[]") or "127.0.0.1", int(port), tls)
    except (OcimirrorError, OSError) as error:  # OSError: the filesystem refused (e.g. S3 403)
        raise fail(str(error), EXIT_FAILED) from None
    console.print(f"serving {layout} at {server.url} (Ctrl-C to stop)", highlight=False)
    for registry_host in registry.unreachable_registries():
        console.print(
            f"note: images from {registry_host} have no name skopeo or Docker accept (only containerd's ?ns= "
            f"reaches them): add --map PREFIX={registry_host}",
            highlight=False,
        )
    server.run()
