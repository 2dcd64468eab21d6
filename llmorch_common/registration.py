"""A container's life in the registry: register once reachable, heartbeat its load, deregister when it drains."""

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable

import grpc
from llmorch.internal.v1 import metadata_pb2, registry_pb2, registry_pb2_grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmorch_common.errors import unauthenticated
from llmorch_common.grpc_edge import make_channel

log = logging.getLogger(__name__)
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"]
MIN_TOKEN_CHARS = 32


class RegistrationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMORCH_REGISTRATION_")

    token: str = Field(
        "",
        description="The control plane's shared credential: the registry's internal listener admits only calls that "
        "carry it, and every model, embedding and orchestrator process presents it. No default: tools/stack.py "
        "generates one per stack home, Helm and Compose from a Secret",
    )


def registration_token() -> str:
    """The configured credential; a process of the control plane refuses to start without a real one."""
    token = RegistrationSettings().token
    if len(token) < MIN_TOKEN_CHARS:
        raise RuntimeError(f"LLMORCH_REGISTRATION_TOKEN must be a secret of at least {MIN_TOKEN_CHARS} characters")
    return token


def registration_check(token: str) -> Callable[[str | None], Awaitable[None]]:
    """The internal listener's gate: the `authorization` header must carry exactly `token`."""
    expected = f"Bearer {token}".encode()

    async def check(authorization: str | None) -> None:
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
            raise unauthenticated("the registry admits only the platform's own components (registration credential)")

    return check


class Registration:
    def __init__(self, registry_address: str, metadata: metadata_pb2.ModelMetadata, interval_s: float) -> None:
        self._channel = make_channel(registry_address, REGISTRY_SERVICE, token=registration_token())
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._metadata = metadata
        self._interval_s = interval_s
        # Set when load changes, so the router learns of a busy replica at once rather than a heartbeat later.
        self.nudge = asyncio.Event()

    async def run(self, in_flight: Callable[[], int]) -> None:
        """Heartbeat forever; (re-)register whenever the registry does not know us, e.g. after it lost its state."""
        registered = False
        while True:
            try:
                if not registered:
                    await self._stub.Register(registry_pb2.RegisterRequest(metadata=self._metadata), timeout=5)
                    registered = True
                    log.info("registered %s at %s", self._metadata.model_id, self._metadata.endpoint)
                await self._stub.Heartbeat(
                    registry_pb2.HeartbeatRequest(
                        model_id=self._metadata.model_id, endpoint=self._metadata.endpoint, in_flight=in_flight()
                    ),
                    timeout=5,
                )
            except grpc.aio.AioRpcError as error:
                # The registry may start after us or restart; keep trying rather than dying.
                registered = registered and error.code() != grpc.StatusCode.NOT_FOUND
                log.debug("registry call failed: %s", error.code().name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.nudge.wait(), self._interval_s)
            self.nudge.clear()

    async def deregister(self) -> None:
        try:
            await self._stub.Deregister(
                registry_pb2.DeregisterRequest(model_id=self._metadata.model_id, endpoint=self._metadata.endpoint),
                timeout=3,
            )
        except grpc.aio.AioRpcError as error:
            log.warning("deregister failed: %s", error.code().name)
        await self.close()

    async def close(self) -> None:
        await self._channel.close()
