"""llm-comply's OpenAI chat checks against the facade: `python -m tools.openai_comply` starts the stack with the real
default model (as the CI test runs it), runs them and writes docs/openai/llm_comply.json, the committed report."""

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from llmorch_common.constants import DEFAULT_MODEL_ID
from tools.stack import BIN, ROOT, Child, ModelGroup, Stack, StackConfig, script_spec

REPORT = ROOT / "docs" / "openai" / "llm_comply.json"
# Checks of features the platform does not offer, and why (the report and the CI test both read this).
NOT_OFFERED = {
    "chat-tool-calling": "tool calling is not offered: a request with tools is a 400 naming `tools`",
    "chat-image-input": "the models are text-only: image content parts are a 400",
    "chat-reasoning-summary": "the models are not reasoning models: no reasoning tokens to summarise",
}


def comply_stack() -> StackConfig:
    """The real default model (the checks ask for short answers that end with `stop`), no embedding service."""
    return StackConfig(models=(ModelGroup(DEFAULT_MODEL_ID),), embed=False)


async def run_llm_comply(base_url: str, api_key: str, model: str, log: Path) -> dict[str, Any]:
    argv = (str(BIN / "llm-comply"), "--format", "openai-chat", "-u", base_url, "-k", api_key, "-m", model, "--json")
    child = Child(script_spec("llm-comply", argv), log).spawn()
    await child.wait_exit(300)
    text = log.read_text()
    report: dict[str, Any] = json.loads(text[text.index("{") :])
    return report


async def main() -> None:
    async with Stack(comply_stack()) as stack:
        report = await run_llm_comply(
            stack.openai_base_url, stack.api_key, DEFAULT_MODEL_ID, stack.home / "llm-comply.log"
        )
    for result in report.get("results", []):
        if result.get("id") in NOT_OFFERED:
            result["not_offered"] = NOT_OFFERED[result["id"]]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"command": "python -m tools.openai_comply", **report}, indent=2) + "\n")
    print(f"wrote {REPORT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
