"""One logging setup for every process: JSON lines (readable text for `make up`), each line carrying the request,
workflow, trace and model it belongs to, wherever those are known."""

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter
from temporalio import activity, workflow

from llmorch_common.tracing import current_trace_id

# The fields a line carries when they are known, in the order the text format prints them.
FIELDS = ("tenant", "request_id", "workflow_id", "trace_id", "model_id")
_bound: ContextVar[Mapping[str, str] | None] = ContextVar("llmorch_log_fields", default=None)


class LogSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMORCH_LOG_")

    format: Literal["json", "text"] = Field(
        "json", description="json: one object per line, for collectors; text: readable lines (make up sets it)"
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Lowest level written")


@contextlib.contextmanager
def bound(**fields: str) -> Iterator[None]:
    """Every line logged inside the block (in this task and tasks it starts) carries these fields."""
    previous = _bound.get()
    _bound.set({**(previous or {}), **{key: value for key, value in fields.items() if value}})
    try:
        yield
    finally:
        # Not a Token reset: a streamed response's generator may be finished in another context than it began in
        # (Starlette closes it from its own task), where the token is refused.
        _bound.set(previous)


def context_fields() -> dict[str, str]:
    """What is known here: fields bound by the caller, then Temporal's workflow id and the current trace."""
    fields = dict(_bound.get() or {})
    if activity.in_activity():
        fields.setdefault("workflow_id", activity.info().workflow_id or "")
    elif workflow.in_workflow():
        fields.setdefault("workflow_id", workflow.info().workflow_id)
    trace_id = current_trace_id()
    if trace_id:
        fields["trace_id"] = trace_id
    return {key: value for key, value in fields.items() if value}


class ContextFilter(logging.Filter):
    """Puts the known fields on the record: as attributes for JSON, and as one `[k=v ...]` suffix for text."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = context_fields()
        for key, value in fields.items():
            setattr(record, key, value)
        record.context = "".join(f" {key}={fields[key]}" for key in FIELDS if key in fields)
        return True


def setup_logging(service: str) -> logging.Logger:
    """Configure the root logger once per process, from its entry point; returns the process's own logger."""
    settings = LogSettings()
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    if settings.format == "json":
        # Temporal's loggers put the workflow or activity info on the record too; as JSON it is a field of its own.
        workflow.logger.workflow_info_on_message = False
        activity.logger.activity_info_on_message = False
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                static_fields={"service": service},
                reserved_attrs=[*RESERVED_ATTRS, "context"],
            )
        )
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s%(context)s"))
    logging.basicConfig(level=settings.level, handlers=[handler], force=True)
    return logging.getLogger(service)
