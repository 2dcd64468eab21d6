"""Key administration on the registry's database: `llmorch-admin keys create|list|revoke` (see --help)."""

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from llmorch_common.errors import PlatformError
from orchestrator_svc.config import OrchestratorSettings
from orchestrator_svc.identity.keys import KeyPolicy, PriorityClass, Role
from orchestrator_svc.identity.service import KeyAdmin
from orchestrator_svc.identity.store import KeyStore


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="llmorch-admin", description=__doc__)
    root.add_argument(
        "--database-url",
        default=None,
        help="the registry's database (default: ORCH_DATABASE_URL, as the API reads it)",
    )
    keys = root.add_subparsers(dest="area", required=True).add_parser("keys", help="API keys")
    commands = keys.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="mint a key; it is printed once and only its hash is stored")
    create.add_argument("--tenant", required=True, help="1 to 32 characters of [a-z0-9_-]")
    create.add_argument("--admin", action="store_true", help="may also list across tenants")
    create.add_argument(
        "--class",
        dest="default_class",
        choices=[c.value for c in PriorityClass],
        default=PriorityClass.INTERACTIVE.value,
        help="priority class of requests that name none",
    )
    create.add_argument("--weight", type=float, default=1.0, help="share of a saturated queue against other tenants")
    create.add_argument("--rpm", type=int, default=0, help="requests per minute; 0: no limit")
    create.add_argument("--tpm", type=int, default=0, help="tokens per minute (prompt + max_tokens); 0: no limit")
    create.add_argument("--concurrency", type=int, default=0, help="requests in flight at once; 0: no limit")
    listing = commands.add_parser("list", help="keys with their tenant, role and state (never the key)")
    listing.add_argument("--tenant", default=None)
    revoke = commands.add_parser("revoke", help="stop a key; every API replica refuses it within its cache TTL")
    revoke.add_argument("key_id")
    return root


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


async def run_command(args: argparse.Namespace) -> None:
    store = await KeyStore.open(args.database_url or OrchestratorSettings().database_url)
    admin = KeyAdmin(store)
    try:
        if args.command == "create":
            policy = KeyPolicy(PriorityClass(args.default_class), args.weight, args.rpm, args.tpm, args.concurrency)
            key, record = await admin.create(args.tenant, Role.ADMIN if args.admin else Role.TENANT, policy)
            print(f"key id {record.key_id} for tenant {record.tenant} ({record.role}); the key, shown only now:")
            print(key)
        elif args.command == "list":
            for record in await admin.list(args.tenant):
                state = f"revoked {_when(record.revoked_at)}" if record.revoked_at else "live"
                p = record.policy
                limits = (
                    f"{p.default_class} w={p.fairness_weight:g} rpm={p.requests_per_minute} tpm={p.tokens_per_minute}"
                )
                print(
                    f"{record.key_id}  {record.tenant:<20} {record.role:<7} {_when(record.created_at)}  {state}  "
                    f"{limits} concurrency={p.max_concurrent}"
                )
        else:
            await admin.revoke(args.key_id)
            print(f"revoked {args.key_id}")
    finally:
        await store.close()


def run() -> None:
    try:
        asyncio.run(run_command(parser().parse_args()))
    except PlatformError as error:
        sys.exit(f"{error.code}: {error.message}")


if __name__ == "__main__":
    run()
