"""Every log line names what it belongs to: the fields bound for a request, and the trace it runs in."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from temporalio import activity, workflow

from llmorch_common import logs


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """setup_logging configures the process's root logger: give it back as the other tests had it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    info_flags = workflow.logger.workflow_info_on_message, activity.logger.activity_info_on_message
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    workflow.logger.workflow_info_on_message, activity.logger.activity_info_on_message = info_flags


def capture(format: str, monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    monkeypatch.setenv("LLMORCH_LOG_FORMAT", format)
    logs.setup_logging("svc")
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return stream


def test_json_lines_carry_the_bound_ids_and_the_current_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = capture("json", monkeypatch)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span, logs.bound(request_id="r1", workflow_id="inference-r1"):
        logging.getLogger("x").info("hello %s", "world")
    logging.getLogger("x").info("outside")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "hello world" and inside["service"] == "svc" and inside["levelname"] == "INFO"
    assert (inside["request_id"], inside["workflow_id"]) == ("r1", "inference-r1")
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert not {"request_id", "workflow_id", "trace_id", "context"} & set(outside), "nothing known, nothing written"


def test_text_lines_end_with_the_known_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = capture("text", monkeypatch)
    with logs.bound(request_id="r2"), logs.bound(model_id="m"):
        logging.getLogger("x").warning("slow")
    assert stream.getvalue().rstrip().endswith("svc WARNING x: slow request_id=r2 model_id=m")
