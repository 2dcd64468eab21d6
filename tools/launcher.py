"""Local launcher: `up` leaves the supervised stack running, `status` shows it, `down` stops it, `demo` asks it a
question. The processes themselves are defined and started by tools/stack.py."""

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

from tools.stack import STARTUP_TIMEOUT_S, LocalStackSettings, launch_supervisor, tail

# Every process waits up to STARTUP_TIMEOUT_S in turn; the real models load one after another.
UP_TIMEOUT_S = STARTUP_TIMEOUT_S * 3


def read_state(settings: LocalStackSettings) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(settings.state_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def running(settings: LocalStackSettings) -> dict[str, Any] | None:
    state = read_state(settings)
    return state if state and pid_alive(state.get("supervisor_pid")) else None


def up(settings: LocalStackSettings) -> dict[str, Any]:
    state = running(settings)
    if state and state["state"] == "ready":
        print("  already up")
        return state
    if state is None:
        settings.state_file.unlink(missing_ok=True)
        supervisor = launch_supervisor(settings)
        supervisor_pid = supervisor.pid
    else:
        supervisor_pid = state["supervisor_pid"]
    printed: set[str] = set()
    deadline = time.monotonic() + UP_TIMEOUT_S
    while time.monotonic() < deadline:
        state = read_state(settings)
        if state and state["supervisor_pid"] == supervisor_pid:
            for name, process in state["processes"].items():
                if name not in printed and state["state"] in ("starting", "ready"):
                    printed.add(name)
                    print(f"  ready  {name:32} {process['info']}", flush=True)
            if state["state"] == "ready":
                print(f"  all models registered; logs in {settings.home / 'logs'}; `make down` stops everything")
                print(f"  development API key (tenant dev), as `authorization: Bearer <key>`:\n  {settings.dev_key()}")
                return state
            if state["state"] == "failed":
                break
        if not pid_alive(supervisor_pid):
            break
        time.sleep(0.2)
    log = settings.home / "logs" / "supervisor.log"
    error = state["error"] if state else "no state written"
    sys.exit(f"the stack did not become ready: {error}\n{tail(log)}")


def status(settings: LocalStackSettings) -> None:
    state = running(settings)
    if state is None:
        print("  not running")
        return
    print(f"  {state['state']} (supervisor pid {state['supervisor_pid']})")
    for name, process in state["processes"].items():
        alive = "up  " if pid_alive(process["pid"]) else "DOWN"
        print(f"  {alive} {name:32} pid {process['pid']:<8} restarts {process['restarts']:<3} {process['info']}")


def down(settings: LocalStackSettings) -> None:
    state = read_state(settings)
    if state is None:
        print("  not running")
        return
    if pid_alive(state["supervisor_pid"]):
        # The supervisor stops its processes in reverse order: models drain while the API and Temporal are there.
        os.kill(state["supervisor_pid"], signal.SIGTERM)
        deadline = time.monotonic() + 120
        while pid_alive(state["supervisor_pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
    # A supervisor that was killed leaves its processes behind: stop them directly.
    for name, process in state["processes"].items():
        if pid_alive(process["pid"]):
            os.killpg(process["pid"], signal.SIGKILL)
            print(f"  killed orphaned {name}")
    settings.state_file.unlink(missing_ok=True)
    print("  stopped")


def demo(settings: LocalStackSettings) -> None:
    from tools.demo import run_demo

    state = up(settings)
    # Through Envoy, the front door users reach.
    target = f"127.0.0.1:{state['ports']['envoy']}"
    asyncio.run(run_demo(target, settings.dev_key(), credentials=settings.envoy_credentials()))


def main() -> None:
    commands = {"up": up, "down": down, "status": status, "demo": demo}
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in commands:
        sys.exit("usage: python -m tools.launcher up|status|down|demo")
    commands[command](LocalStackSettings())


if __name__ == "__main__":
    main()
