"""What every activity that calls a gRPC service needs: its deadline, and gRPC errors in Temporal's terms."""

import grpc
from temporalio import activity
from temporalio.exceptions import ApplicationError

from llmorch_common.errors import INPUT_ERROR_CODES


def activity_error(error: grpc.aio.AioRpcError) -> ApplicationError:
    """Input errors are final; everything else (UNAVAILABLE, RESOURCE_EXHAUSTED, ...) is Temporal's to retry."""
    code = error.code().name
    return ApplicationError(error.details() or code, type=code, non_retryable=code in INPUT_ERROR_CODES)


def remaining_s() -> float | None:
    """The gRPC deadline follows the activity's own, so a call never outlives the activity."""
    timeout = activity.info().start_to_close_timeout
    return None if timeout is None else max(timeout.total_seconds(), 1.0)
