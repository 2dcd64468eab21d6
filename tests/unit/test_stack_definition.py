"""Only tools/stack.py starts the stack's processes: a lint over every Python file, and the lint's own check."""

import ast
import re
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
STACK_MODULE = ROOT / "tools" / "stack.py"
SKIPPED_DIRS = {".venv", ".venv-bench", "gen", "data", "build", "node_modules", ".git", "test-artifacts"}

# Calls that leave a process running: only the stack module may make them, whatever they start.
LONG_LIVED = {"Popen", "create_subprocess_exec", "create_subprocess_shell", "start_local", "system", "spawn"}
LONG_LIVED_PREFIXES = ("exec", "spawn", "posix_spawn")
# Calls that run a tool to completion (grpcurl, node, helm): allowed, unless they name a process of the stack.
RUN_TO_COMPLETION = {"run", "call", "check_call", "check_output"}
STACK_PROGRAMS = re.compile(
    r"\b(temporal|envoy|model_svc|embed_svc|orchestrator_svc|postgres|initdb|pg_ctl|litellm|llama_cpp\.server)\b",
    re.IGNORECASE,
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


def test_the_replicated_stack_plan(tmp_path: Path) -> None:
    """`make up REPLICAS=2` as a plan: PostgreSQL first, two API replicas and two workers that share the database
    and nothing else, every replica and worker reaching every API replica, Envoy over both."""
    from tools.stack import Ports, fake_stack, plan, replicated

    config = replicated(fake_stack(), 2)
    ports = Ports.free(1).with_replicas(2, 2, fixed=False)
    specs = {spec.name: spec for spec in plan(config, tmp_path, ports)}
    assert list(specs)[:2] == ["postgres", "temporal"]
    assert {"api", "api-1", "worker", "worker-1", "envoy"} <= set(specs)
    apis = [specs["api"], specs["api-1"]]
    assert [int(s.env["ORCH_PORT"]) for s in apis] == list(ports.apis)
    target = f"ipv4:127.0.0.1:{ports.api_internals[0]},127.0.0.1:{ports.api_internals[1]}"
    model = next(spec for name, spec in specs.items() if name.startswith("model-"))
    assert model.env["MODEL_REGISTRY_ADDRESS"] == target
    orchestrators = [*apis, specs["worker"], specs["worker-1"]]
    assert {s.env["ORCH_REGISTRY_ADDRESS"] for s in orchestrators} == {target}
    assert {s.env["ORCH_DATABASE_URL"].split("@")[1] for s in orchestrators} == {f"127.0.0.1:{ports.postgres}/postgres"}
    assert {s.env["ORCH_VECTOR_STORE"] for s in orchestrators} == {"postgres"}
    assert len({s.env["ORCH_STAGING_DB"] for s in orchestrators}) == 4, "each replica has its own data directory"
    password = (tmp_path / "postgres" / "password").read_text().strip()
    assert len(password) >= 24 and password in specs["api"].env["ORCH_DATABASE_URL"]
    envoy_config = (tmp_path / "envoy.yaml").read_text()
    assert all(f"port_value: {port}" in envoy_config for port in ports.apis)


def test_one_api_replica_keeps_the_embedded_sqlite_registry(tmp_path: Path) -> None:
    from tools.stack import Ports, StackConfig, fake_stack, plan

    specs = {spec.name: spec for spec in plan(fake_stack(), tmp_path, Ports.free(1))}
    assert "postgres" not in specs and "api-1" not in specs
    assert specs["api"].env["ORCH_DATABASE_URL"] == f"sqlite:///{tmp_path / 'registry.db'}"
    with pytest.raises(ValueError, match="postgres"):
        StackConfig(api_replicas=2)


def test_the_peer_runs_beside_the_stack_from_its_own_virtualenv(tmp_path: Path) -> None:
    """The bench's peer: llama-cpp-python's server on the given weights from .venv-bench, LiteLLM routing to that
    server's port with a generated master key; neither is planned unless asked for."""
    from dataclasses import replace

    from tools.stack import BENCH_VENV, PEER_MODEL_NAME, Ports, fake_stack, peer_key, plan

    weights = tmp_path / "model.gguf"
    ports = Ports.free(1)
    assert not any(s.name.startswith("peer") for s in plan(fake_stack(), tmp_path, ports))
    specs = {s.name: s for s in plan(replace(fake_stack(), peer_weights=weights, peer_n_threads=3), tmp_path, ports)}
    engine, proxy = specs["peer-engine"], specs["peer-proxy"]
    assert engine.argv[0] == str(BENCH_VENV / "bin" / "python") and proxy.argv[0] == str(BENCH_VENV / "bin" / "litellm")
    assert engine.tcp_port == ports.peer_engine and proxy.tcp_port == ports.peer_proxy
    assert engine.argv[engine.argv.index("--model") + 1] == str(weights)
    assert engine.argv[engine.argv.index("--n_threads") + 1] == "3"
    config = yaml.safe_load((tmp_path / "litellm.yaml").read_text())
    (route,) = config["model_list"]
    assert route["model_name"] == PEER_MODEL_NAME
    assert route["litellm_params"]["api_base"] == f"http://127.0.0.1:{ports.peer_engine}/v1"
    key = proxy.env["LITELLM_MASTER_KEY"]
    assert key.startswith("sk-") and len(key) > 30 and key == peer_key(tmp_path)
    assert (tmp_path / "peer-key").stat().st_mode & 0o077 == 0


def test_make_up_tls_gives_envoy_a_certificate_from_the_local_ca(tmp_path: Path) -> None:
    """`make up TLS=1` as a plan: a CA and certificate in home/tls, made once; Envoy serves them and is checked
    trusting that CA."""
    from tools.stack import LocalStackSettings, Ports, plan

    config = LocalStackSettings(home=tmp_path, free_ports=True, tls=True).config()
    assert config.tls is not None and config.tls.ca == tmp_path / "tls" / "ca.pem"
    certificate = config.tls.cert.read_bytes()
    assert LocalStackSettings(home=tmp_path, free_ports=True, tls=True).config().tls == config.tls
    assert config.tls.cert.read_bytes() == certificate, "a restart keeps the certificate clients already trust"
    envoy = next(spec for spec in plan(config, tmp_path, Ports.free(2)) if spec.name == "envoy")
    assert envoy.tls_ca == config.tls.ca and "https://" in envoy.info
    rendered = (tmp_path / "envoy.yaml").read_text()
    assert f'"filename": "{config.tls.cert}"' in rendered and f'"filename": "{config.tls.key}"' in rendered
    assert LocalStackSettings(home=tmp_path, free_ports=True).config().tls is None, "plaintext unless asked"
    # `make demo` with TLS reaches Envoy trusting that CA.
    assert LocalStackSettings(home=tmp_path, tls=True).envoy_credentials() is not None
    assert LocalStackSettings(home=tmp_path).envoy_credentials() is None
