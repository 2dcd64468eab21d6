"""Where the shared reference data lives: beside the repository in ../shared/testdata, or at $LLMORCH_TESTDATA."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def reference_data_dir() -> Path:
    override = os.environ.get("LLMORCH_TESTDATA")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "testdata"
