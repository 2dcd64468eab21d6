"""Generation engines behind ModelService: llama.cpp for real models and a deterministic fake for timing tests.

No gRPC here: the servicer converts protobuf to these types and maps PlatformError to statuses.
"""

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmorch_common.contracts import CANCELLED, LENGTH, ChatTurn, Sampling
from llmorch_common.errors import PlatformError, out_of_range, resource_exhausted

if TYPE_CHECKING:
    from llama_cpp import Llama  # loading llama.cpp is deferred until a real engine is built


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[ChatTurn, ...]
    prompt: str
    sampling: Sampling


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_ms: float
    generation_ms: float


@dataclass(frozen=True)
class PreparedPrompt:
    """A request as llama.cpp sees it: the rendered prompt's tokens and the stop strings its chat template adds."""

    tokens: list[int]
    stops: list[str]


DeltaSink = Callable[[str], None]


class Engine(Protocol):
    """One context: runs one generation at a time, on a worker thread."""

    def generate(self, request: GenerationRequest, on_delta: DeltaSink, cancelled: threading.Event) -> GenerationResult:
        """Blocking; calls on_delta per piece of text and stops early once `cancelled` is set."""
        ...


def transcript(messages: tuple[ChatTurn, ...]) -> str:
    """A base model has no chat template, so a conversation becomes a plain transcript it can continue."""
    lines = [f"{turn.role.capitalize()}: {turn.content}" for turn in messages]
    return "\n".join([*lines, "Assistant:"])


class LlamaEngine:
    """One llama.cpp context; chat models get their GGUF chat template, base models plain completion."""

    def __init__(self, model_path: Path, chat: bool, context_limit: int, n_threads: int, gpu: bool) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama = Llama(
            model_path=str(model_path),
            n_ctx=context_limit,
            n_threads=n_threads,
            n_gpu_layers=-1 if gpu else 0,
            verbose=False,
        )
        self._context_limit = context_limit
        self._formatter: Any = None
        template = self._llama.metadata.get("tokenizer.chat_template") if chat else None
        if template:
            vocab = self._llama
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=vocab.detokenize([vocab.token_eos()]).decode(errors="ignore"),
                bos_token=vocab.detokenize([vocab.token_bos()]).decode(errors="ignore"),
            )

    @property
    def llama(self) -> "Llama":
        """The llama_cpp.Llama behind this context, for baselines that call llama-cpp-python directly."""
        return self._llama

    def prepare(self, request: GenerationRequest) -> PreparedPrompt:
        """The prompt exactly as generation feeds it to llama.cpp, so a direct baseline runs the same tokens."""
        text, stops = self._render(request)
        return PreparedPrompt(self._llama.tokenize(text.encode(), add_bos=True, special=True), stops)

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=True)) if text else 0

    def _render(self, request: GenerationRequest) -> tuple[str, list[str]]:
        if self._formatter is None:
            return (transcript(request.messages) if request.messages else request.prompt), []
        # A chat model given a raw prompt answers it as a single user turn.
        turns = request.messages or (ChatTurn("user", request.prompt),)
        formatted = self._formatter(messages=[{"role": t.role, "content": t.content} for t in turns])
        stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop]
        # An empty stop string would end every generation at once; EOS ends it anyway.
        return formatted.prompt, [stop for stop in stops if stop]

    def generate(self, request: GenerationRequest, on_delta: DeltaSink, cancelled: threading.Event) -> GenerationResult:
        prompt = self.prepare(request)
        tokens = prompt.tokens
        sampling = request.sampling
        if len(tokens) + sampling.max_tokens > self._context_limit:
            raise out_of_range(
                f"prompt is {len(tokens)} tokens; with max_tokens={sampling.max_tokens} it exceeds "
                f"the context limit of {self._context_limit}"
            )
        started = time.perf_counter()
        first_token_at: float | None = None
        pieces: list[str] = []
        finish_reason = LENGTH
        stream: Any = self._llama.create_completion(
            tokens,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=[*prompt.stops, *sampling.stop] or None,
            seed=sampling.seed,
            repeat_penalty=sampling.repeat_penalty,
            stream=True,
        )
        try:
            for chunk in stream:
                choice = chunk["choices"][0]
                if choice["text"]:
                    first_token_at = first_token_at or time.perf_counter()
                    pieces.append(choice["text"])
                    on_delta(choice["text"])
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
                if cancelled.is_set():
                    finish_reason = CANCELLED
                    break
        finally:
            stream.close()  # frees the context at once when cancelled mid-generation
        text = "".join(pieces)
        return _result(text, finish_reason, len(tokens), self.count_tokens(text), started, first_token_at)


class FakeEngine:
    """Deterministic text and timing behind the real ModelService contract, for timing and chaos tests."""

    def __init__(self, model_id: str, context_limit: int, first_token_ms: float, token_ms: float) -> None:
        self._model_id = model_id
        self._context_limit = context_limit
        self._first_token_s = first_token_ms / 1000
        self._token_s = token_ms / 1000

    def generate(self, request: GenerationRequest, on_delta: DeltaSink, cancelled: threading.Event) -> GenerationResult:
        prompt = transcript(request.messages) if request.messages else request.prompt
        prompt_tokens = len(prompt.split())
        if prompt_tokens + request.sampling.max_tokens > self._context_limit:
            raise out_of_range(f"prompt is {prompt_tokens} tokens; exceeds the context limit of {self._context_limit}")
        started = time.perf_counter()
        digest = hashlib.sha256(f"{self._model_id}|{prompt}".encode()).hexdigest()
        words = [f"{self._model_id}-{digest[i % 60 : i % 60 + 4]}" for i in range(request.sampling.max_tokens)]
        pieces: list[str] = []
        first_token_at: float | None = None
        for index, word in enumerate(words):
            if cancelled.wait(self._first_token_s if index == 0 else self._token_s):
                return _result("".join(pieces), CANCELLED, prompt_tokens, index, started, first_token_at)
            first_token_at = first_token_at or time.perf_counter()
            piece = word if index == 0 else " " + word
            pieces.append(piece)
            on_delta(piece)
        return _result("".join(pieces), LENGTH, prompt_tokens, len(words), started, first_token_at)


def _result(
    text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int, started: float, first: float | None
) -> GenerationResult:
    finished = time.perf_counter()
    return GenerationResult(
        text=text,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        time_to_first_token_ms=((first or finished) - started) * 1000,
        generation_ms=(finished - started) * 1000,
    )


class EnginePool:
    """max_concurrency contexts; each runs one generation at a time, because llama.cpp contexts are not thread-safe."""

    def __init__(
        self, engines: list[Engine], admission_timeout_s: float, on_load_change: Callable[[], None] = lambda: None
    ) -> None:
        self._on_load_change = on_load_change
        self._free: asyncio.Queue[Engine] = asyncio.Queue()
        for engine in engines:
            self._free.put_nowait(engine)
        self._size = len(engines)
        # One thread per context: the loop's default executor is smaller than a large fake pool.
        self._threads = ThreadPoolExecutor(max_workers=self._size, thread_name_prefix="engine")
        self._admission_timeout_s = admission_timeout_s

    @property
    def in_flight(self) -> int:
        return self._size - self._free.qsize()

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[str | GenerationResult, None]:
        """Yield text deltas, then the GenerationResult. Closing the iterator early cancels the generation."""
        try:
            engine = await asyncio.wait_for(self._free.get(), self._admission_timeout_s or None)
        except TimeoutError:
            raise resource_exhausted(
                f"all {self._size} contexts busy for {self._admission_timeout_s}s", retry_after_s=1.0
            ) from None
        self._on_load_change()
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | BaseException | GenerationResult] = asyncio.Queue()
        cancelled = threading.Event()

        def push(text: str) -> None:
            loop.call_soon_threadsafe(deltas.put_nowait, text)

        def run() -> None:
            try:
                result: GenerationResult | BaseException = engine.generate(request, push, cancelled)
            except BaseException as error:  # handed to the event loop, which raises it in the caller
                result = error
            loop.call_soon_threadsafe(deltas.put_nowait, result)

        worker = loop.run_in_executor(self._threads, run)
        try:
            while True:
                item = await deltas.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, GenerationResult):
                    return
        finally:
            cancelled.set()
            # The context goes back only once its thread has stopped, so it is never shared.
            await asyncio.shield(worker)
            self._free.put_nowait(engine)
            self._on_load_change()

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        async for item in self.stream(request):
            if isinstance(item, GenerationResult):
                return item
        raise PlatformError("engine ended without a result", "INTERNAL")
