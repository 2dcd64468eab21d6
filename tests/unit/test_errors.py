"""Every conversion in llmorch_common.errors, one test per mapping: domain <-> gRPC <-> Temporal."""

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType

from llmorch_common.errors import (
    MAX_STATUS_MESSAGE_CHARS,
    FieldViolation,
    PlatformError,
    from_activity_failure,
    from_exception,
    from_rpc,
    from_workflow_failure,
    input_failure,
    invalid_argument,
    not_found,
    resource_exhausted,
    to_activity_failure,
    to_final_failure,
    to_status,
    unavailable,
)


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def activity_error(cause: BaseException) -> ActivityError:
    error = ActivityError(
        "activity failed",
        scheduled_event_id=5,
        started_event_id=6,
        identity="worker",
        activity_type="generate",
        activity_id="1",
        retry_state=None,
    )
    error.__cause__ = cause
    return error


def status_details(status: grpc.Status) -> list[object]:
    """The rich details a client unpacks from the status's trailing metadata."""
    parsed = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    found: list[object] = []
    for detail in parsed.details:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found.append(message)
    return found


def test_to_status_carries_field_violations_as_bad_request() -> None:
    status = to_status(invalid_argument([FieldViolation("sampling.top_p", "must be in (0, 1]")]))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    [bad_request] = status_details(status)
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [("sampling.top_p", "must be in (0, 1]")]


def test_to_status_carries_retry_info_when_told_when_to_come_back() -> None:
    status = to_status(resource_exhausted("full", retry_after_s=1.5))
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED and status.details == "full"
    [retry] = status_details(status)
    assert isinstance(retry, error_details_pb2.RetryInfo) and retry.retry_delay.ToMilliseconds() == 1500


def test_to_status_bounds_a_message_that_quotes_a_long_input() -> None:
    message = f"no LLM {'x' * 100_001!r} is registered"
    status = to_status(not_found(message))
    assert status.code == grpc.StatusCode.NOT_FOUND
    assert (
        status.details
        == f"{message[:MAX_STATUS_MESSAGE_CHARS]}... ({len(message) - MAX_STATUS_MESSAGE_CHARS} more characters)"
    )
    assert sum(len(key) + len(value) for key, value in status.trailing_metadata) < 4096


def test_from_rpc_keeps_the_downstream_code_and_message() -> None:
    error = from_rpc(rpc_error(grpc.StatusCode.OUT_OF_RANGE, "prompt too long"))
    assert (error.code, error.message) == ("OUT_OF_RANGE", "prompt too long")


def test_from_exception_passes_domain_errors_maps_rpc_errors_and_hides_the_rest_as_internal() -> None:
    domain = unavailable("no model")
    assert from_exception(domain) is domain
    assert from_exception(rpc_error(grpc.StatusCode.NOT_FOUND, "gone")).code == "NOT_FOUND"
    internal = from_exception(ValueError("boom"))
    assert internal.code == "INTERNAL" and "ValueError" in internal.message


@pytest.mark.parametrize(
    ("error", "code", "final"),
    [
        (invalid_argument([FieldViolation("prompt", "required")]), "INVALID_ARGUMENT", True),
        (PlatformError("busy", "RESOURCE_EXHAUSTED"), "RESOURCE_EXHAUSTED", False),
        (rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"), "UNAVAILABLE", False),
        (rpc_error(grpc.StatusCode.OUT_OF_RANGE, "too long"), "OUT_OF_RANGE", True),
    ],
)
def test_to_activity_failure_makes_only_input_errors_final(
    error: PlatformError | grpc.aio.AioRpcError, code: str, final: bool
) -> None:
    failure = to_activity_failure(error)
    assert (failure.type, failure.non_retryable) == (code, final)


def test_to_final_failure_is_never_retried() -> None:
    failure = to_final_failure(unavailable("nothing can serve"))
    assert (failure.type, failure.non_retryable, failure.message) == ("UNAVAILABLE", True, "nothing can serve")


def test_from_activity_failure_keeps_the_activity_code_and_adds_context() -> None:
    failure = from_activity_failure(activity_error(ApplicationError("no such doc", type="NOT_FOUND")), "document 'a': ")
    assert (failure.type, failure.message, failure.non_retryable) == ("NOT_FOUND", "document 'a': no such doc", True)


def test_from_activity_failure_without_a_code_is_unavailable() -> None:
    failure = from_activity_failure(
        activity_error(TimeoutError("timed out", type=TimeoutType.HEARTBEAT, last_heartbeat_details=[]))
    )
    assert failure.type == "UNAVAILABLE" and failure.non_retryable


def test_input_failure_ends_the_request_only_for_input_errors() -> None:
    final = input_failure(activity_error(ApplicationError("too long", type="OUT_OF_RANGE", non_retryable=True)))
    assert final is not None and (final.type, final.message) == ("OUT_OF_RANGE", "too long")
    assert input_failure(activity_error(ApplicationError("crashed", type="UNAVAILABLE"))) is None


def test_from_workflow_failure_finds_the_code_through_the_cause_chain() -> None:
    nested = activity_error(ApplicationError("no model can serve", type="UNAVAILABLE"))
    error = from_workflow_failure(WorkflowFailureError(cause=nested))
    assert (error.code, error.message) == ("UNAVAILABLE", "no model can serve")


def test_from_workflow_failure_without_an_application_error_is_internal() -> None:
    error = from_workflow_failure(WorkflowFailureError(cause=RuntimeError("worker lost")))
    assert error.code == "INTERNAL" and "worker lost" in error.message


def test_a_local_activity_failure_raised_as_its_cause_converts_the_same_way() -> None:
    """temporalio raises a failed local activity's ApplicationError itself, not an ActivityError around it."""
    failure = from_activity_failure(ApplicationError("no model can serve", type="UNAVAILABLE"), "selection: ")
    assert (failure.type, failure.message) == ("UNAVAILABLE", "selection: no model can serve")
    assert input_failure(ApplicationError("bad", type="INVALID_ARGUMENT")) is not None
