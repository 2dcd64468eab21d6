"""Generate the Compose stack's secrets once: deploy/compose/.env and Envoy's certificate in deploy/compose/tls/.

    .venv/bin/python deploy/compose/init_secrets.py [--host llmorch.example.com ...]

.env (mode 0600, read by `docker compose` from this directory) holds the Postgres password (Temporal's and the
registry's database), Grafana's admin password, the registration token and the payload keys, all random. They are
printed once, when they are made; a rerun keeps an existing .env and prints nothing secret. tls/ gets a local CA and
a certificate it signs for localhost, 127.0.0.1 and each --host (tools/tls.py); put your own cert.pem and key.pem
there first to use them instead. Clients trust tls/ca.pem (`grpcurl -cacert deploy/compose/tls/ca.pem ...`).
"""

import argparse
import secrets
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from llmorch_common.payload_codec import new_key  # noqa: E402
from tools.tls import DEFAULT_HOSTS, issue  # noqa: E402

ENV_FILE = HERE / ".env"
TLS_DIR = HERE / "tls"


def generated() -> dict[str, str]:
    """Every secret docker-compose.yml asks for (`${NAME:?...}`), freshly made; URL-safe, as one goes in a URL."""
    return {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "LLMORCH_REGISTRATION_TOKEN": secrets.token_urlsafe(36),
        "LLMORCH_PAYLOAD_KEYS": new_key("k1"),
    }


def write_env(path: Path) -> dict[str, str] | None:
    """Write `path` unless it exists; return what was written (None: kept)."""
    if path.exists():
        return None
    values = generated()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", action="append", default=[], help="another name or IP for Envoy's certificate")
    parser.add_argument("--dir", type=Path, default=HERE, help="where .env and tls/ go (default: beside the file)")
    args = parser.parse_args(argv)
    values = write_env(args.dir / ".env")
    if values is None:
        print(f"kept {args.dir / '.env'} (delete it to generate new secrets; the payload keys open old histories)")
    else:
        print(f"wrote {args.dir / '.env'}; shown this once:")
        for name, value in values.items():
            print(f"  {name}={value}")
    files = issue(args.dir / "tls", (*DEFAULT_HOSTS, *args.host))
    # Envoy runs as its image's own user, which must read the bind-mounted key: readable, in a directory of yours.
    files.key.chmod(0o644)
    print(f"Envoy's certificate {files.cert}; clients trust {files.ca}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
