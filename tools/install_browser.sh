#!/usr/bin/env bash
# Install headless Debian Chromium (+ chromedriver) for the web-console e2e test; a no-op when already present.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "install_browser.sh: need root or sudo for apt-get" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Try with the current package lists first; refresh them only if that fails (keeps reruns fast and offline-friendly).
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver \
  || { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver; }
chromium --version
