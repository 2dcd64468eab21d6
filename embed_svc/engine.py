"""Sentence embeddings over llama.cpp as sentence-transformers makes them: mean pooling, truncation, L2 norm."""

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp import _internals


@dataclass(frozen=True)
class EmbeddingBatch:
    """One row per input text, unit L2 norm, in input order."""

    vectors: npt.NDArray[np.float32]
    token_counts: list[int]


def truncate(tokens: list[int], max_tokens: int) -> list[int]:
    """Keep the closing [SEP], as sentence-transformers does: the limit counts [CLS] and [SEP]."""
    if len(tokens) <= max_tokens:
        return tokens
    return [*tokens[: max_tokens - 1], tokens[-1]]


def l2_normalise(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # A zero vector stays zero instead of becoming NaN.
    normalised: npt.NDArray[np.float32] = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalised


def plan_batches(lengths: list[int], max_tokens: int, max_sequences: int) -> list[list[int]]:
    """Group text indices so each decode holds at most max_tokens tokens and max_sequences texts."""
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, length in enumerate(lengths):
        if current and (used + length > max_tokens or len(current) >= max_sequences):
            batches.append(current)
            current, used = [], 0
        current.append(index)
        used += length
    if current:
        batches.append(current)
    return batches


class EmbeddingEngine:
    """One llama.cpp context; its calls are serialised because contexts are not thread-safe."""

    def __init__(
        self,
        model_path: Path,
        max_tokens: int = 256,
        batch_tokens: int = 512,
        batch_sequences: int = 8,
        n_threads: int = 2,
    ) -> None:
        if batch_tokens < max_tokens:
            raise ValueError("batch_tokens must hold at least one full text")
        self.max_tokens = max_tokens
        self._batch_sequences = batch_sequences
        self._lock = threading.Lock()
        # A non-causal model must see each whole sequence in one micro-batch, so n_ubatch equals n_batch.
        self._llama = llama_cpp.Llama(
            str(model_path),
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=batch_tokens,
            n_batch=batch_tokens,
            n_ubatch=batch_tokens,
            n_seq_max=batch_sequences,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        self._batch = _internals.LlamaBatch(n_tokens=batch_tokens, embd=0, n_seq_max=batch_sequences, verbose=False)
        self.dimension = self._llama.n_embd()
        self.batch_tokens = batch_tokens

    def tokenize(self, text: str) -> list[int]:
        with self._lock:
            tokens = self._llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        return truncate(tokens, self.max_tokens)

    def embed_sync(self, texts: list[str]) -> EmbeddingBatch:
        with self._lock:
            token_lists = [
                truncate(self._llama.tokenize(t.encode("utf-8"), add_bos=True, special=False), self.max_tokens)
                for t in texts
            ]
            vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
            lengths = [len(tokens) for tokens in token_lists]
            for indices in plan_batches(lengths, self.batch_tokens, self._batch_sequences):
                vectors[indices] = self._decode([token_lists[i] for i in indices])
        return EmbeddingBatch(l2_normalise(vectors), lengths)

    async def embed(self, texts: list[str]) -> EmbeddingBatch:
        """Run in a worker thread so the event loop keeps serving health checks and other RPCs."""
        return await asyncio.to_thread(self.embed_sync, texts)

    def _decode(self, sequences: list[list[int]]) -> npt.NDArray[np.float32]:
        """Decode several texts at once; llama.cpp mean-pools each sequence id separately."""
        context = self._llama._ctx
        self._batch.reset()  # type: ignore[no-untyped-call]
        for seq_id, tokens in enumerate(sequences):
            self._batch.add_sequence(tokens, seq_id, True)
        context.kv_cache_clear()  # type: ignore[no-untyped-call]
        context.decode(self._batch)
        rows = np.empty((len(sequences), self.dimension), dtype=np.float32)
        for seq_id in range(len(sequences)):
            pointer = llama_cpp.llama_get_embeddings_seq(context.ctx, seq_id)
            rows[seq_id] = np.ctypeslib.as_array(pointer, shape=(self.dimension,))
        return rows

    def close(self) -> None:
        with self._lock:
            self._batch.close()  # type: ignore[no-untyped-call]
            self._llama.close()
