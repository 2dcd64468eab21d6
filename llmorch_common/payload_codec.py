"""Tenant data inside Temporal stays encrypted: every workflow payload (prompts, answers, retrieved chunks) is sealed
with AES-GCM before it leaves a process, and opened only by processes that hold the key.

Keys rotate by id: new payloads use the first key, and every listed key still opens what it sealed. Payloads
without the encrypted encoding (histories recorded before encryption) pass through unchanged.
"""

import base64
import logging
import os
from collections.abc import Sequence
from dataclasses import replace

import temporalio.converter
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.runtime import Runtime

from llmorch_common.tracing import temporal_interceptors

log = logging.getLogger(__name__)
ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class PayloadSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMORCH_PAYLOAD_")

    keys: str = Field(
        "",
        description="Comma-separated key_id=base64(32 bytes); the first seals, all open. Empty: payloads in clear "
        "text (the local stack always sets one: tools/stack.py)",
    )


def parse_keys(text: str) -> dict[str, bytes]:
    """`id=base64,...` → {id: key}, in order; every key must be 256 bits."""
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key_id, _, encoded = item.partition("=")
        key = base64.b64decode(encoded, validate=True)
        if not key_id or len(key) != 32:
            raise ValueError(f"payload key {key_id!r}: need id=base64 of 32 bytes")
        keys[key_id] = key
    return keys


def new_key(key_id: str) -> str:
    """A fresh `id=base64` entry for LLMORCH_PAYLOAD_KEYS."""
    return f"{key_id}={base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


class EncryptionCodec(temporalio.converter.PayloadCodec):
    def __init__(self, keys: dict[str, bytes]) -> None:
        if not keys:
            raise ValueError("at least one key")
        self._sealing_id = next(iter(keys))
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.open(payload) for payload in payloads]

    def seal(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._sealing_id].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(metadata={"encoding": ENCODING, KEY_ID: self._sealing_id.encode()}, data=nonce + sealed)

    def open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata[KEY_ID].decode()
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise ValueError(f"payload sealed with key {key_id!r}, which this process does not hold")
        data = payload.data
        return Payload.FromString(cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None))


def data_converter(keys: dict[str, bytes]) -> temporalio.converter.DataConverter:
    if not keys:
        return temporalio.converter.default()
    return replace(temporalio.converter.default(), payload_codec=EncryptionCodec(keys))


async def connect(address: str, namespace: str, runtime: Runtime | None = None) -> Client:
    """The one way a process of the platform connects to Temporal: its address, namespace, payload keys and, when
    tracing is on, the tracing interceptor (which every worker built on this client inherits)."""
    keys = parse_keys(PayloadSettings().keys)
    if not keys:
        log.warning("LLMORCH_PAYLOAD_KEYS is empty: workflow payloads go to Temporal in clear text")
    return await Client.connect(
        address,
        namespace=namespace,
        data_converter=data_converter(keys),
        runtime=runtime or Runtime.default(),
        interceptors=temporal_interceptors(),
    )
