#!/usr/bin/env bash
# Install Debian's PostgreSQL server binaries (the registry's shared database in tests and `make up REPLICAS=2`);
# a no-op when present. Only the binaries are used: tools/stack.py runs its own cluster in data/, never the system
# service, so the package's default cluster is stopped and kept from starting again.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null && compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "install_postgres.sh: need root or sudo for apt-get" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# No policy-rc.d games: in a container without systemd the package's cluster does not start; where it does, stop it.
$SUDO apt-get install -y -q --no-install-recommends postgresql \
  || { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends postgresql; }
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters --no-header 2>/dev/null | while read -r version name _; do
    $SUDO pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
  done
fi
ls /usr/lib/postgresql/*/bin/postgres
