"""The import-linter contracts in pyproject.toml hold, and fail on a planted wrong-way import (as `make lint` runs
them)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator_svc", "model_svc", "embed_svc", "llmorch_common", "llmorch_client", "tools", "tests")
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the sources, so a planted import never touches the checkout."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "histories"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def plant(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_contracts_hold_on_the_sources(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 8 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "orchestrator_svc/inference/service.py",
            "from orchestrator_svc.inference import servicer  # noqa",
            "In each feature, the servicer may import the service, never the reverse",
        ),
        ("model_svc/engine.py", "import orchestrator_svc.app  # noqa", "never import the orchestrator"),
        ("llmorch_common/errors.py", "import tools.stack  # noqa", "Runtime packages never import tools or tests"),
        (
            "orchestrator_svc/registry/records.py",
            "import orchestrator_svc.registry.service  # noqa",
            "No import cycles",
        ),
        (
            "orchestrator_svc/openai_http/app.py",
            "from orchestrator_svc.inference import servicer  # noqa",
            "The HTTP facade never imports a gRPC servicer",
        ),
        (
            "orchestrator_svc/inference/service.py",
            "import orchestrator_svc.openai_http.wire  # noqa",
            "nothing but the assembly imports it",
        ),
    ],
    ids=["service->servicer", "model_svc->orchestrator", "runtime->tools", "cycle", "http->servicer", "service->http"],
)
def test_a_planted_wrong_way_import_breaks_its_contract(tree: Path, module: str, line: str, contract: str) -> None:
    plant(tree / module, line)
    result = lint_imports(tree)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
