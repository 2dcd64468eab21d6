"""The public API's breaking-change check can fail: it runs the very script `make lint` runs, on a broken copy."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "tools" / "check_breaking.sh"
BASELINE = ROOT / "proto" / "baseline" / "llmorch-v1.binpb"
# buf comes from the virtualenv (PyPI buf-bin), as in `make lint`.
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

pytestmark = pytest.mark.skipif(shutil.which("buf", path=PATH) is None, reason="buf (PyPI buf-bin) is not installed")


def check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK), str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PATH": PATH},
    )


def copy_tree(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} should occur once in {path}"
    path.write_text(text.replace(old, new))


def test_lint_runs_this_script() -> None:
    """The test and CI cannot drift: lint calls the same script with no arguments."""
    assert "\ttools/check_breaking.sh\n" in (ROOT / "Makefile").read_text()
    assert "'.git#branch=main'" not in (ROOT / "Makefile").read_text()


def test_the_tree_as_committed_passes() -> None:
    assert BASELINE.exists()
    result = check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_removing_a_public_field_fails(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    edit(root / "proto/llmorch/v1/orchestrator.proto", "  int32 context_limit = 6;\n", "")
    result = check(root)
    assert result.returncode != 0
    assert 'with name "context_limit" on message "Model" was deleted' in result.stdout, result.stdout + result.stderr


def test_renaming_a_public_rpc_fails(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    edit(root / "proto/llmorch/v1/retrieval.proto", "rpc Query(", "rpc Search(")
    result = check(root)
    assert result.returncode != 0
    assert '"Query" on service "RetrievalService" was deleted' in result.stdout, result.stdout + result.stderr


def test_internal_changes_are_not_breaking_for_users(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    edit(root / "proto/llmorch/internal/v1/metadata.proto", "  int32 max_concurrency = 6;\n", "")
    result = check(root)
    assert result.returncode == 0, result.stdout + result.stderr
