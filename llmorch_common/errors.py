"""Typed domain errors, and the one place that converts them to and from gRPC statuses and Temporal failures.

Services raise PlatformError; only the edges convert: the gRPC edge (grpc_edge), activities and workflows.
"""

import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, TimeoutError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldViolation:
    """One bad field, named by its path in the request (e.g. "sampling.max_tokens")."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """A limit that refused the call: whose (`subject`, e.g. "api_key:<id>") and which one."""

    subject: str
    description: str


@dataclass
class PlatformError(Exception):
    """Base of every error a client may see; `code` is a google.rpc.Code name."""

    message: str
    code: str = "INTERNAL"
    violations: tuple[FieldViolation, ...] = field(default_factory=tuple)
    retry_after_s: float | None = None
    quota: tuple[QuotaViolation, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        return self.message


def invalid_argument(violations: list[FieldViolation]) -> PlatformError:
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return PlatformError(f"invalid request: {summary}", "INVALID_ARGUMENT", tuple(violations))


def not_found(message: str) -> PlatformError:
    return PlatformError(message, "NOT_FOUND")


def out_of_range(message: str) -> PlatformError:
    return PlatformError(message, "OUT_OF_RANGE")


def already_exists(message: str) -> PlatformError:
    return PlatformError(message, "ALREADY_EXISTS")


def failed_precondition(message: str) -> PlatformError:
    return PlatformError(message, "FAILED_PRECONDITION")


def unavailable(message: str) -> PlatformError:
    return PlatformError(message, "UNAVAILABLE")


def unauthenticated(message: str) -> PlatformError:
    return PlatformError(message, "UNAUTHENTICATED")


def permission_denied(message: str) -> PlatformError:
    return PlatformError(message, "PERMISSION_DENIED")


def resource_exhausted(message: str, retry_after_s: float, quota: tuple[QuotaViolation, ...] = ()) -> PlatformError:
    return PlatformError(message, "RESOURCE_EXHAUSTED", retry_after_s=retry_after_s, quota=quota)


# Codes that mean "the input is wrong": retrying them anywhere is pointless, so Temporal marks them non-retryable.
INPUT_ERROR_CODES = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "OUT_OF_RANGE", "ALREADY_EXISTS"})


# ---------------------------------------------------------------------------------------------------------------
# Every conversion between the three vocabularies: domain (PlatformError), gRPC (status) and Temporal (failures).
# A Temporal failure carries its google.rpc.Code name as the ApplicationError type, so it survives the workflow.


def to_status(error: PlatformError) -> grpc.Status:
    """Domain → gRPC: a google.rpc.Status with BadRequest or RetryInfo details, so clients get machine-readable
    reasons."""
    details = []
    if error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        details.append(_pack(bad_request))
    if error.quota:
        failure = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(subject=q.subject, description=q.description)
                for q in error.quota
            ]
        )
        details.append(_pack(failure))
    if error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after_s * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=code_pb2.Code.Value(error.code), message=bounded(error.message), details=details)
    return rpc_status.to_status(status)


# A status travels in HTTP/2 trailers twice (grpc-message, and grpc-status-details-bin in base64), and a message may
# quote what the caller sent (an unknown model id, collection or ingestion id). Unbounded, a long one passes the
# client's 16 KiB metadata limit (it sees RESOURCE_EXHAUSTED instead of the answer) and Envoy's header limit, and
# Envoy then resets its whole connection to the API: every request in flight on it fails, whoever sent it.
MAX_STATUS_MESSAGE_CHARS = 1024


def bounded(message: str) -> str:
    """`message`, cut to MAX_STATUS_MESSAGE_CHARS with a note of how much was left out."""
    if len(message) <= MAX_STATUS_MESSAGE_CHARS:
        return message
    left_out = len(message) - MAX_STATUS_MESSAGE_CHARS
    return f"{message[:MAX_STATUS_MESSAGE_CHARS]}... ({left_out} more characters)"


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def from_rpc(error: grpc.aio.AioRpcError) -> PlatformError:
    """gRPC → domain: a downstream service's status carried through unchanged, so a client sees the real cause."""
    code = error.code().name if error.code() is not None else "UNAVAILABLE"
    return PlatformError(error.details() or code, code)


def from_exception(error: Exception) -> PlatformError:
    """Anything a handler raised → domain; what is neither domain nor gRPC is INTERNAL, and logged."""
    if isinstance(error, PlatformError):
        return error
    if isinstance(error, grpc.aio.AioRpcError):
        return from_rpc(error)
    log.exception("unexpected error in handler", exc_info=error)
    return PlatformError(f"internal error: {type(error).__name__}: {error}", "INTERNAL")


def to_activity_failure(error: PlatformError | grpc.aio.AioRpcError) -> ApplicationError:
    """Domain or gRPC → Temporal, inside an activity: input errors are final, everything else (UNAVAILABLE,
    RESOURCE_EXHAUSTED, ...) is Temporal's to retry."""
    domain = from_rpc(error) if isinstance(error, grpc.aio.AioRpcError) else error
    return ApplicationError(domain.message, type=domain.code, non_retryable=domain.code in INPUT_ERROR_CODES)


def to_final_failure(error: PlatformError) -> ApplicationError:
    """Domain → Temporal for a verdict that no retry changes (a routing decision, a store's answer)."""
    return ApplicationError(error.message, type=error.code, non_retryable=True)


# What awaiting an activity raises in workflow code. A local activity raises its cause itself (temporalio 1.35),
# not an ActivityError around it, so a workflow catches all of them.
ACTIVITY_FAILURES = (ActivityError, ApplicationError, TimeoutError)


def _activity_cause(error: FailureError) -> BaseException | None:
    return error.cause if isinstance(error, ActivityError) else error


def from_activity_failure(error: FailureError, context: str = "", suffix: str = "") -> ApplicationError:
    """An activity gave up → the request's failure: the activity's code, or UNAVAILABLE when it had none."""
    cause = _activity_cause(error)
    code = cause.type if isinstance(cause, ApplicationError) and cause.type else "UNAVAILABLE"
    message = cause.message if isinstance(cause, ApplicationError) else str(cause)
    return ApplicationError(f"{context}{message}{suffix}", type=code, non_retryable=True)


def input_failure(error: FailureError) -> ApplicationError | None:
    """The request's failure when the activity rejected the input, else None: another model would reject the same
    input the same way, so there is nothing to fall back to."""
    cause = _activity_cause(error)
    if isinstance(cause, ApplicationError) and cause.type in INPUT_ERROR_CODES:
        return ApplicationError(cause.message, type=cause.type, non_retryable=True)
    return None


def from_workflow_failure(error: WorkflowFailureError) -> PlatformError:
    """Temporal → domain, at the API: the workflow fails with ApplicationError(type=<google.rpc.Code name>);
    anything else is INTERNAL."""
    cause: BaseException | None = error.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__
    if isinstance(cause, ApplicationError) and cause.type:
        return PlatformError(cause.message, cause.type)
    return PlatformError(f"request failed: {error.cause}", "INTERNAL")
