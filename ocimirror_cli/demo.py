"""``ocimirror demo``: the whole job end to end on embedded defaults, offline.

Starts Debian's ``docker-registry`` on loopback, pushes a sample multi-arch image (two platforms plus
attestations) under two tags that share a base layer, mirrors them with the ``mirror-sync`` flow on an
ephemeral Prefect server into a local store, syncs again (nothing to do), and verifies the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ocimirror.config import MirrorConfig, parse_config
from ocimirror_demo.images import DEFAULT_PLATFORMS, build_index, build_manifest, push_image, random_layer
from ocimirror_demo.registry import LocalRegistry

from .app import EXIT_FAILED, app
from .mirroring import flow_run_settings, quiet_prefect

REPOSITORY = "demo/hello"
LAYER_SIZE = 2 * 1024 * 1024


def push_sample_images(registry_url: str) -> None:
    """``demo/hello:1.0`` and ``:1.1``, each linux/amd64 + linux/arm64 with attestations; 1.1 adds a layer
    on 1.0's base, so the second tag costs only what is new."""
    for tag, extra_layers in (("1.0", 0), ("1.1", 1)):
        manifests = [
            build_manifest(
                [random_layer(LAYER_SIZE, f"base-{platform}")]
                + [random_layer(LAYER_SIZE // 4, f"{tag}-{platform}-{n}") for n in range(extra_layers)],
                platform,
            )
            for platform in DEFAULT_PLATFORMS
        ]
        push_image(registry_url, REPOSITORY, tag, build_index(manifests, attestations=True))


def demo_config(registry_host: str, store: Path) -> MirrorConfig:
    """The embedded defaults: every 1.x tag of the sample repository, all platforms, into ``store``."""
    return parse_config(
        {
            "store": {"url": str(store)},
            "images": [{"source": f"{registry_host}/{REPOSITORY}", "semver": ">=1.0,<2"}],
            "concurrency": 4,
        },
        source="demo defaults",
    )


def run_demo(store: Path, say) -> bool:
    """Run the demo, reporting each step through ``say``; return whether the store verified clean."""
    from flows.mirror import mirror_sync
    from ocimirror.store import open_store
    from ocimirror.verify import list_images, verify_store

    with LocalRegistry() as registry:
        say(f"source registry: docker-registry on {registry.url}")
        push_sample_images(registry.url)
        say(f"pushed {REPOSITORY}:1.0 and :1.1 (linux/amd64, linux/arm64/v8, attestations)")
        config = demo_config(registry.host, store)
        for attempt in ("first sync", "second sync (should find nothing to do)"):
            result = mirror_sync(config=config)
            say(f"{attempt}:")
            for image in result.images:
                fetched = f", fetched {image.result.blobs_fetched} blobs" if image.result else ""
                say(f"  {image.status:<10} {image.reference} {image.source_digest}{fetched}")
    layout = open_store(str(store))
    for image in list_images(layout):
        say(f"in store: {image.reference} {image.digest} {','.join(image.platforms)}")
    report = verify_store(layout)
    say(f"verify: {'ok' if report.ok else 'FAILED'} {report.summary()}")
    say("the runs were recorded on an ephemeral Prefect server; to browse them in the UI, run `prefect server")
    say("start`, export PREFECT_API_URL=http://127.0.0.1:4200/api and run the demo again")
    return report.ok


@app.command()
def demo(
    store: Annotated[str, typer.Option(metavar="DIR", help="Local directory for the demo store.")] = "./demo-store",
) -> None:
    """Mirror a sample image from a local registry (started here) into a local store, then verify it."""
    quiet_prefect()
    with flow_run_settings():
        ok = run_demo(Path(store).resolve(), print)
    raise typer.Exit(0 if ok else EXIT_FAILED)
