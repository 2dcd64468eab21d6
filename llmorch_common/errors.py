"""Typed domain errors: services raise these, and only the transport edge turns them into gRPC statuses."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    """One bad field, named by its path in the request (e.g. "sampling.max_tokens")."""

    field: str
    description: str


@dataclass
class PlatformError(Exception):
    """Base of every error a client may see; `code` is a google.rpc.Code name."""

    message: str
    code: str = "INTERNAL"
    violations: tuple[FieldViolation, ...] = field(default_factory=tuple)
    retry_after_s: float | None = None

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


def unavailable(message: str) -> PlatformError:
    return PlatformError(message, "UNAVAILABLE")


def resource_exhausted(message: str, retry_after_s: float) -> PlatformError:
    return PlatformError(message, "RESOURCE_EXHAUSTED", retry_after_s=retry_after_s)


# Codes that mean "the input is wrong": retrying them anywhere is pointless, so Temporal marks them non-retryable.
INPUT_ERROR_CODES = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "OUT_OF_RANGE", "ALREADY_EXISTS"})
