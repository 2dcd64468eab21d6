"""A bounded fault-and-load run on the multi-replica stack (`make reliability`, and tests/chaos/test_reliability.py).

Clients send requests through Envoy while one API replica, one worker and one model replica are SIGKILLed, the
Temporal dev server is killed and restarted on its database file, and PostgreSQL is restarted. A client that loses
its connection asks again with the same request id. Afterwards every request id is checked against Temporal:
completed + failed cleanly must equal accepted, with none lost, and no generation may have run more attempts than
its retry policy allows. `python -m tools.reliability --write` puts the counts in docs/reliability.md.
"""

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from orchestrator_svc.inference.service import workflow_id
from tools.bench import machine
from tools.stack import DEV_TENANT, Stack, fake_stack, replicated

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "reliability.md"
GENERATE_ATTEMPTS = 2  # ORCH_GENERATE_ATTEMPTS for this run: Temporal attempts per model
MAX_SELECTIONS = 4  # ORCH_MAX_SELECTIONS: models tried per request
TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@dataclass
class Outcome:
    request_id: str
    calls: int = 0
    answer: str = ""
    error: str = ""


@dataclass
class Report:
    sent: int = 0
    accepted: int = 0
    completed: int = 0
    failed_cleanly: int = 0
    lost: list[str] = field(default_factory=list)
    never_accepted: int = 0  # ids a client gave up on before any API replica started their workflow
    reattached: int = 0  # answered after a lost connection, by asking again with the same id
    reattached_same_answer: int = 0
    max_generate_attempt: int = 0
    max_generate_schedules: int = 0
    over_retry_policy: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    load_s: float = 0.0
    total_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.over_retry_policy
            and self.completed + self.failed_cleanly == self.accepted
            and self.reattached_same_answer == self.reattached
        )


def generate_request(request_id: str) -> orchestrator_pb2.GenerateRequest:
    return orchestrator_pb2.GenerateRequest(
        request_id=request_id, prompt=f"story {request_id}", sampling=types_pb2.SamplingParams(max_tokens=20)
    )


async def workflow_status(client: Client, request_id: str) -> WorkflowExecutionStatus | None:
    try:
        description = await client.get_workflow_handle(workflow_id(DEV_TENANT, request_id)).describe()
    except RPCError:
        return None  # not started, or Temporal is down this moment
    return description.status


async def ask(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, client: Client, outcome: Outcome, give_up_at: float
) -> None:
    """Ask until answered; after a transport failure ask again with the same id, which attaches to the same run."""
    while time.monotonic() < give_up_at:
        outcome.calls += 1
        try:
            reply = await stub.Generate(generate_request(outcome.request_id), timeout=30)
            outcome.answer, outcome.error = reply.text, ""
            return
        except grpc.aio.AioRpcError as error:
            outcome.error = f"{error.code().name}: {error.details()}"
            if error.code() not in TRANSIENT:
                return
            if await workflow_status(client, outcome.request_id) == WorkflowExecutionStatus.FAILED:
                return  # the request failed cleanly; asking again returns the same failure
        await asyncio.sleep(0.3 + random.random() * 0.4)


async def load(stack: Stack, client: Client, clients: int, load_s: float, outcomes: list[Outcome]) -> None:
    stop_at = time.monotonic() + load_s
    give_up_at = stop_at + 90

    async def one_client(stub: orchestrator_pb2_grpc.OrchestratorServiceStub) -> None:
        while time.monotonic() < stop_at:
            outcome = Outcome(f"rel-{uuid.uuid4().hex[:12]}")
            outcomes.append(outcome)
            await ask(stub, client, outcome, give_up_at)

    async with stack.channel() as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        await asyncio.gather(*(one_client(stub) for _ in range(clients)))


async def inject_faults(stack: Stack, report: Report, load_s: float) -> None:
    """One fault at a time, spread over the load: each process the issue names, killed the way production loses it."""
    started = time.monotonic()
    step = load_s / 6

    async def at(offset: float, what: str) -> None:
        await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
        report.faults.append(f"{time.monotonic() - started:5.1f} s  {what}")

    await at(step, "SIGKILL API replica `api`")
    stack.child("api").kill()
    await at(2 * step, "SIGKILL orchestrator worker `worker`")
    stack.child("worker").kill()
    model = next(child for child in stack.children if child.name.startswith("model-"))
    await at(3 * step, f"SIGKILL model replica `{model.name}`")
    model.kill()
    await at(4 * step, "SIGKILL the Temporal dev server, then start it again on the same database file")
    temporal = stack.child("temporal")
    temporal.kill()
    await asyncio.sleep(2)
    await temporal.start()
    report.faults.append(f"{time.monotonic() - started:5.1f} s  Temporal serving again")
    await at(5 * step, "restart PostgreSQL (fast shutdown, then start on the same data directory)")
    postgres = stack.child("postgres")
    await postgres.terminate(30)
    await postgres.start()
    report.faults.append(f"{time.monotonic() - started:5.1f} s  PostgreSQL serving again")


async def check(client: Client, outcomes: list[Outcome], report: Report) -> None:
    """Every id against Temporal: the only judge of what was accepted and how it ended."""
    report.sent = len(outcomes)
    for outcome in outcomes:
        handle = client.get_workflow_handle(workflow_id(DEV_TENANT, outcome.request_id))
        try:
            description = await handle.describe()
        except RPCError:
            report.never_accepted += 1
            continue
        report.accepted += 1
        if description.status == WorkflowExecutionStatus.COMPLETED:
            report.completed += 1
        elif description.status == WorkflowExecutionStatus.FAILED:
            report.failed_cleanly += 1
        else:
            report.lost.append(f"{outcome.request_id}: {description.status.name if description.status else '?'}")
            continue
        history = await handle.fetch_history()
        attempts = [
            e.activity_task_started_event_attributes.attempt
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        ]
        schedules = sum(
            e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == "generate"
            for e in history.events
        )
        report.max_generate_attempt = max(report.max_generate_attempt, *attempts, 0)
        report.max_generate_schedules = max(report.max_generate_schedules, schedules)
        if max(attempts, default=0) > GENERATE_ATTEMPTS or schedules > MAX_SELECTIONS:
            report.over_retry_policy.append(outcome.request_id)
        if outcome.calls > 1 and outcome.answer:
            report.reattached += 1
            report.reattached_same_answer += await same_answer(client, outcome)


async def same_answer(client: Client, outcome: Outcome) -> bool:
    """The answer a reattached client got is the run's recorded result: one run, never a second generation."""
    result: Any = await client.get_workflow_handle(workflow_id(DEV_TENANT, outcome.request_id)).result()
    text = result["text"] if isinstance(result, dict) else getattr(result, "text", None)
    return bool(text == outcome.answer)


async def run(clients: int = 6, load_s: float = 60.0) -> Report:
    report = Report(load_s=load_s)
    began = time.monotonic()
    settings = (("ORCH_GENERATE_ATTEMPTS", str(GENERATE_ATTEMPTS)), ("ORCH_MAX_SELECTIONS", str(MAX_SELECTIONS)))
    fake = fake_stack(replicas=2, max_concurrency=4, token_ms=20.0, orchestrator_env=settings)
    config = replicated(replace(fake, label="reliability"), 2)
    outcomes: list[Outcome] = []
    async with Stack(config) as stack:
        client = await stack.temporal_client()
        await asyncio.gather(load(stack, client, clients, load_s, outcomes), inject_faults(stack, report, load_s))
        client = await stack.temporal_client()  # the first one's connection saw Temporal die
        await check(client, outcomes, report)
    report.total_s = round(time.monotonic() - began, 1)
    return report


def markdown(report: Report, argv: list[str]) -> str:
    described = machine.describe(argv, module="tools.reliability")
    verdict = "PASS" if report.ok else "FAIL"
    rows = [
        ("requests sent (ids)", report.sent),
        ("accepted (a workflow exists in Temporal)", report.accepted),
        ("completed", report.completed),
        ("failed cleanly (a status that says why)", report.failed_cleanly),
        ("lost (accepted, neither completed nor failed)", len(report.lost)),
        ("never accepted (client gave up before any start)", report.never_accepted),
        ("reattached after a lost connection, same id", report.reattached),
        ("... and got the run's recorded answer", report.reattached_same_answer),
        (f"highest generate attempt (policy: {GENERATE_ATTEMPTS})", report.max_generate_attempt),
        (f"most generate dispatches in one request (policy: {MAX_SELECTIONS})", report.max_generate_schedules),
        ("requests over their retry policy", len(report.over_retry_policy)),
    ]
    lines = [
        "# Reliability under faults and load",
        "",
        "Written by `make reliability` (`python -m tools.reliability --write`); never edited by hand. The stack is "
        "`make up REPLICAS=2` with the fake engine (two model replicas): PostgreSQL, Temporal dev server, two API "
        "replicas behind Envoy, two workers. Clients call Generate through Envoy and, after a lost connection, ask "
        "again with the same request id. Every id is then checked against Temporal.",
        "",
        f"**Result: {verdict}** — completed + failed cleanly = {report.completed + report.failed_cleanly}, "
        f"accepted = {report.accepted}; lost = {len(report.lost)}.",
        "",
        "| count | value |",
        "| --- | ---: |",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
        f"Load {report.load_s:.0f} s, whole run {report.total_s} s. Faults, in order (seconds into the load):",
        "",
        *[f"- {fault}" for fault in report.faults],
        "",
        "## Machine",
        "",
        machine.markdown(described).replace("(`make bench` runs it without flags)", "(`make reliability` runs it)"),
        "",
    ]
    if report.lost:
        lines += ["## Lost requests", "", *[f"- `{item}`" for item in report.lost], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--load-s", type=float, default=60.0)
    parser.add_argument("--write", action="store_true", help=f"write {REPORT.relative_to(ROOT)}")
    args = parser.parse_args()
    report = asyncio.run(run(args.clients, args.load_s))
    print(json.dumps(asdict(report), indent=1))
    if args.write:
        REPORT.write_text(markdown(report, sys.argv[1:]))
        print(f"wrote {REPORT}")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
