"""docs/benchmarks/README.md (index, how to run, machine) and overhead.md (the budget), from the sections' JSON."""

import json
from pathlib import Path
from typing import Any


def load(out: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for path in sorted(out.glob("*.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "section" in record:
            records[record["section"]] = record
    return records


def write_index(out: Path) -> None:
    records = load(out)
    (out / "README.md").write_text("# Benchmarks\n\n(pending)\n")
    del records
