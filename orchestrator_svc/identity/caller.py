"""The principal of the call being handled, set by the public port's key gate before any handler runs."""

from contextvars import ContextVar

from llmorch_common.grpc_edge import AuthGate
from orchestrator_svc.identity.keys import Principal
from orchestrator_svc.identity.service import KeyChecker

CALLER: ContextVar[Principal] = ContextVar("llmorch_caller")


def caller() -> Principal:
    """Inside a public handler: who is calling (the gate refused every call it could not name)."""
    return CALLER.get()


def key_gate(checker: KeyChecker) -> AuthGate:
    return AuthGate(checker.authenticate, CALLER)
