#!/usr/bin/env bash
# Install what ocimirror, its demo and its tests need on a fresh Debian machine (run as root, or with sudo
# available): the distribution registry, skopeo, umoci and containerd (the serve tests start its daemon) from
# Debian, and the Python package with its test extra from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v docker-registry >/dev/null || ! command -v skopeo >/dev/null || ! command -v umoci >/dev/null \
  || ! command -v containerd >/dev/null; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends docker-registry skopeo umoci containerd >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e ".[test]"
