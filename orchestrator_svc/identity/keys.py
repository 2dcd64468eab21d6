"""API keys as values: who a key speaks for (Principal), its wire format, and the scrypt hash that is all we store."""

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

# A key reads `llmo_<key id>_<secret>`: the id finds the row without hashing, the secret is checked against it.
KEY_PREFIX = "llmo_"
KEY_FORMAT = re.compile(r"^llmo_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# scrypt at n=2^14, r=8 costs about 16 MiB and tens of milliseconds: cheap once per cache period, costly to guess.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class Role(StrEnum):
    TENANT = "tenant"  # its own tenant's requests and collections
    ADMIN = "admin"  # also lists across tenants


class PriorityClass(StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


# Temporal dispatches lower priority keys first (1 to 5, 3 when unset): interactive ahead of batch, room either side.
PRIORITY_KEYS = {PriorityClass.INTERACTIVE: 2, PriorityClass.BATCH: 4}
CLASS_OF_PRIORITY_KEY = {key: cls for cls, key in PRIORITY_KEYS.items()}


@dataclass(frozen=True)
class KeyPolicy:
    """What a key's requests get: their class when they name none, their share of a saturated queue against other
    tenants (fairness weight), and their rate limits, 0 meaning none."""

    default_class: PriorityClass = PriorityClass.INTERACTIVE
    fairness_weight: float = 1.0
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    max_concurrent: int = 0


NO_LIMITS = KeyPolicy()


@dataclass(frozen=True)
class Principal:
    """Who a call speaks for, once its key checked out."""

    key_id: str
    tenant: str
    role: Role
    policy: KeyPolicy = NO_LIMITS

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    tenant: str
    role: Role
    secret_hash: str
    created_at: float
    revoked_at: float | None = None
    policy: KeyPolicy = NO_LIMITS

    @property
    def principal(self) -> Principal:
        return Principal(self.key_id, self.tenant, self.role, self.policy)


@dataclass(frozen=True)
class NewKey:
    """A freshly minted key: `key` is shown once and never stored."""

    key: str
    key_id: str
    secret_hash: str


def valid_tenant(tenant: str) -> bool:
    return bool(TENANT_NAME.fullmatch(tenant))


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_secret(secret: str) -> str:
    """`scrypt$n$r$p$salt$hash`: the parameters travel with the hash, so they can rise without invalidating keys."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def secret_matches(secret: str, secret_hash: str) -> bool:
    scheme, n, r, p, salt, digest = secret_hash.split("$")
    if scheme != "scrypt":
        return False
    computed = _scrypt(secret, base64.b64decode(salt), int(n), int(r), int(p))
    return hmac.compare_digest(computed, base64.b64decode(digest))


def mint_key() -> NewKey:
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return NewKey(f"{KEY_PREFIX}{key_id}_{secret}", key_id, hash_secret(secret))


def parse_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = KEY_FORMAT.fullmatch(key)
    return (match[1], match[2]) if match else None
