#!/usr/bin/env bash
# The README's first command: set up, then mirror a sample multi-arch image from a local registry (started
# here, on loopback) into ./demo-store with the mirror-sync flow on an ephemeral Prefect server, sync again
# (a no-op), and verify the store. Needs no network beyond the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m ocimirror_cli demo --store "${1:-./demo-store}"
