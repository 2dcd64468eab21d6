"""What the generation lifecycle (ADR 0010) adds to each request's workflow history, measured on recorded histories.

python -m tools.bench.history_cost [HISTORY.json ...]   (default: tests/workflow/histories/inference_*.json)

For every payload in a history it strips the fields the lifecycle added (token ids and positions on stream signals,
the stream epoch, the continuation prefix, the provenance parts, ...) and re-encodes it the way the SDK's JSON
converter does; the difference, plus the patch marker, is the extra cost. No server is needed.
"""

import json
import sys
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

ROOT = Path(__file__).resolve().parents[2]
HISTORIES = ROOT / "tests" / "workflow" / "histories"
LIFECYCLE_FIELDS = frozenset(
    {
        "token_ids",
        "start",
        "assistant_prefix",
        "resumed_tokens",
        "activity_attempts",
        "parts",
        "epoch",
        "reset",
        "reset_reason",
        "on_fallback",
    }
)
PATCH_MARKER = "core_patch"


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in LIFECYCLE_FIELDS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def payload_extra(payload: Payload) -> int:
    """Bytes of this JSON payload that the lifecycle fields take."""
    if payload.metadata.get("encoding") != b"json/plain":
        return 0
    value = json.loads(payload.data)
    return len(payload.data) - len(json.dumps(_strip(value), separators=(",", ":")).encode())


def payloads_of(message: Any) -> list[Payload]:
    """Every Payload inside a history event, wherever it sits (single, repeated or map fields); they are the
    event's own messages, so changing one changes the event."""
    found: list[Payload] = []
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if isinstance(value, Payload):
            items: list[Any] = [value]
        elif hasattr(value, "ListFields"):
            items = [value]
        elif hasattr(value, "values"):  # map field
            items = list(value.values())
        else:  # repeated field
            items = list(value)
        for item in items:
            if isinstance(item, Payload):
                found.append(item)
            elif hasattr(item, "ListFields"):
                found.extend(payloads_of(item))
    return found


def measure(path: Path) -> dict[str, Any]:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    total = extra = signals = signal_extra = 0
    for event in history.events:
        size = event.ByteSize()
        total += size
        marker = event.marker_recorded_event_attributes.marker_name
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and marker == PATCH_MARKER:
            extra += size
            continue
        added = sum(payload_extra(p) for p in payloads_of(event))
        extra += added
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            signals += 1
            signal_extra += added
    return {
        "history": path.stem,
        "events": len(history.events),
        "bytes": total,
        "lifecycle_bytes": extra,
        "share": extra / total if total else 0.0,
        "stream_signals": signals,
        "bytes_per_signal": signal_extra / signals if signals else 0.0,
    }


COMMAND = "python -m tools.bench.history_cost --out docs/benchmarks"


def main(argv: list[str]) -> None:
    """Print the table; with `--out DIR`, also write history_cost.json and history_cost.md there (make bench)."""
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    names = [a for a in argv if a != "--out" and (out is None or a != str(out))]
    rows = [measure(path) for path in ([Path(a) for a in names] or sorted(HISTORIES.glob("inference_*.json")))]
    header = ["history", "events", "bytes", "lifecycle bytes", "share", "stream signals", "bytes per signal"]
    lines = [
        f"| {r['history']} | {r['events']} | {r['bytes']} | {r['lifecycle_bytes']} | {r['share']:.1%} | "
        f"{r['stream_signals']} | {r['bytes_per_signal']:.1f} |"
        for r in rows
    ]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *lines])
    print(table)
    if out:
        (out / "history_cost.json").write_text(json.dumps({"command": COMMAND, "rows": rows}, indent=1) + "\n")
        (out / "history_cost.md").write_text(
            "# What the generation lifecycle adds to a request's history (ADR 0010)\n\n"
            f"Written by `{COMMAND}` (run by `make bench`) from the committed histories in "
            "tests/workflow/histories; data in [history_cost.json](history_cost.json).\n\n" + table + "\n"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
