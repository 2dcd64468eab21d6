"""Only tools/stack.py starts the stack's processes: a lint over every Python file, and the lint's own check."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK_MODULE = ROOT / "tools" / "stack.py"
SKIPPED_DIRS = {".venv", "gen", "data", "build", "node_modules", ".git", "test-artifacts"}

# Calls that leave a process running: only the stack module may make them, whatever they start.
LONG_LIVED = {"Popen", "create_subprocess_exec", "create_subprocess_shell", "start_local", "system", "spawn"}
LONG_LIVED_PREFIXES = ("exec", "spawn", "posix_spawn")
# Calls that run a tool to completion (grpcurl, node, helm): allowed, unless they name a process of the stack.
RUN_TO_COMPLETION = {"run", "call", "check_call", "check_output"}
STACK_PROGRAMS = re.compile(
    r"\b(temporal|envoy|model_svc|embed_svc|orchestrator_svc|postgres|initdb|pg_ctl)\b", re.IGNORECASE
)


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _module_constants(tree: ast.Module) -> dict[str, list[str]]:
    """String literals of module-level assignments, so `ENVOY = BIN / "envoy"` counts where ENVOY is used."""
    constants: dict[str, list[str]] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = _strings(statement.value)
    return constants


SPAWNING_MODULES = {"subprocess", "asyncio", "os", "pty", "WorkflowEnvironment", "loop"}


def _spawn_call(call: ast.Call) -> str:
    """'long' for a call that leaves a process running, 'run' for one that runs a tool to completion, else ''."""
    func = call.func
    name = _name(func)
    owner = _name(func.value) if isinstance(func, ast.Attribute) else ""
    if isinstance(func, ast.Name) and name in LONG_LIVED:  # `from subprocess import Popen`
        return "long"
    if owner in SPAWNING_MODULES and (name in LONG_LIVED or name.startswith(LONG_LIVED_PREFIXES)):
        return "long"
    if owner == "subprocess" and name in RUN_TO_COMPLETION:
        return "run"
    # asyncio.to_thread(subprocess.run, [...]) runs the tool in a thread; the argv follows the function.
    first = call.args[0] if call.args else None
    if isinstance(first, ast.Attribute) and _name(first.value) == "subprocess":
        return "run" if first.attr in RUN_TO_COMPLETION else "long"
    return ""


def stack_spawns(source: str, path: str = "<source>") -> list[str]:
    """Every place in `source` that starts a stack process, or any long-lived process, outside the stack module.

    A tool run to completion passes unless a string it is given (directly, or through a module-level constant) names
    a stack program; an argv built elsewhere and passed through a parameter is beyond this check, which is why any
    long-lived spawn fails outright."""
    tree = ast.parse(source)
    constants = _module_constants(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        kind = _spawn_call(node)
        if not kind:
            continue
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        strings = _strings(node) + [text for name in names for text in constants.get(name, [])]
        if kind == "long" or any(STACK_PROGRAMS.search(text) for text in strings):
            segment = ast.get_source_segment(source, node) or ""
            found.append(f"{path}:{node.lineno}: {segment.splitlines()[0][:100]}")
    return found


def python_files() -> list[Path]:
    return [
        path
        for path in ROOT.rglob("*.py")
        if not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts) and path != STACK_MODULE
    ]


def test_no_module_but_the_stack_definition_starts_stack_processes() -> None:
    files = python_files()
    assert len(files) > 50 and ROOT / "tools" / "launcher.py" in files
    offenders = [hit for path in files for hit in stack_spawns(path.read_text(), str(path.relative_to(ROOT)))]
    assert offenders == [], "start processes through tools/stack.py:\n" + "\n".join(offenders)


def test_the_lint_finds_every_way_of_starting_a_stack_process() -> None:
    planted = """
import asyncio, os, subprocess, sys
from temporalio.testing import WorkflowEnvironment
ENVOY = BIN / "envoy"
subprocess.Popen([sys.executable, "-m", "model_svc"])
await asyncio.create_subprocess_exec("temporal", "server", "start-dev")
await WorkflowEnvironment.start_local()
subprocess.run([ENVOY, "-c", "envoy.yaml"])
await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "embed_svc"])
os.execv(sys.executable, [sys.executable, "-m", "orchestrator_svc", "api"])
"""
    hits = stack_spawns(planted)
    assert sorted(int(hit.split(":")[1]) for hit in hits) == [5, 6, 7, 8, 9, 10], hits


def test_the_lint_lets_tools_run_to_completion() -> None:
    allowed = """
import subprocess
GRPCURL = BIN / "grpcurl"
subprocess.run([GRPCURL, "-plaintext", target, "list"], check=False)
subprocess.run(["node", "console.spec.mjs"], check=False)
"""
    assert stack_spawns(allowed) == []
