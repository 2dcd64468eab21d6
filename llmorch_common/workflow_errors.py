"""How a workflow ends a request when an activity gave up: with the activity's status code, or UNAVAILABLE."""

from temporalio.exceptions import ActivityError, ApplicationError


def request_failure(error: ActivityError, context: str = "") -> ApplicationError:
    """A non-retryable ApplicationError whose type is the google.rpc.Code name the API will answer with."""
    cause = error.cause
    code = cause.type if isinstance(cause, ApplicationError) and cause.type else "UNAVAILABLE"
    message = cause.message if isinstance(cause, ApplicationError) else str(cause)
    return ApplicationError(f"{context}{message}", type=code, non_retryable=True)
