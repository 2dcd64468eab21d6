#!/usr/bin/env bash
# Install the Debian packages the tests run for real (given as arguments, with the command, or for a package without
# one the absolute path of a file it installs, that proves each one is there); a no-op for those already present.
# Usage: install_debian.sh package:command|package:/path ...
set -euo pipefail
missing=()
for pair in "$@"; do
  probe="${pair#*:}"
  if [[ "$probe" == /* ]]; then
    [[ -e "$probe" ]] || missing+=("${pair%%:*}")
  else
    command -v "$probe" >/dev/null 2>&1 || missing+=("${pair%%:*}")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "install_debian.sh: need root or sudo for apt-get" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Try with the current package lists first; refresh them only if that fails (keeps reruns fast and offline-friendly).
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" \
  || { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; }
