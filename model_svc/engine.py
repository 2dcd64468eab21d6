"""Generation engines behind ModelService: llama.cpp for real models and a deterministic fake for timing tests.

No gRPC here: the servicer converts protobuf to these types and maps PlatformError to statuses.
"""

import asyncio
import hashlib
import random
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmorch_common.contracts import CANCELLED, LENGTH, STOP, ChatTurn, Sampling
from llmorch_common.errors import FieldViolation, PlatformError, invalid_argument, out_of_range, resource_exhausted

if TYPE_CHECKING:
    from llama_cpp import Llama  # loading llama.cpp is deferred until a real engine is built


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[ChatTurn, ...]
    prompt: str
    sampling: Sampling
    # Tokens this model already generated for the request: replayed, then generation continues after them.
    resume_token_ids: tuple[int, ...] = ()
    # Text the answer already starts with (another model's), appended to the rendered prompt.
    assistant_prefix: str = ""


@dataclass(frozen=True)
class Piece:
    """Streamed text and the tokens it decodes from: the pieces so far always equal the detokenized tokens so far,
    so the token ids a client has seen text for are a resume point that repeats or skips nothing."""

    text: str
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    """text and completion_tokens cover what this call generated, after any resumed tokens."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_ms: float
    generation_ms: float
    resumed_tokens: int = 0


@dataclass(frozen=True)
class PreparedPrompt:
    """A request as llama.cpp sees it: the rendered prompt's tokens and the stop strings its chat template adds."""

    tokens: list[int]
    stops: list[str]


DeltaSink = Callable[[Piece], None]
# llama-cpp-python's defaults for what create_completion does, kept so answers read as before.
PENALTY_LAST_N = 64
TOP_K = 40
MIN_P = 0.05


class Engine(Protocol):
    """One context: runs one generation at a time, on a worker thread."""

    def generate(self, request: GenerationRequest, on_delta: DeltaSink, cancelled: threading.Event) -> GenerationResult:
        """Blocking; calls on_delta per piece of text and stops early once `cancelled` is set.

        With resume_token_ids it continues after them, generating at most max_tokens minus their number."""
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
        # The prompt tokens (all but the last) whose cache the context holds at positions 0.., in one batch.
        self._cached_head: list[int] = []
        # The prompt whose last token was evaluated last, if nothing was since: the context's logits are its.
        self._prompt_with_logits: list[int] = []
        self.prompt_cache_hits = 0
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
        text, stops = self._render_turns(request)
        return text + request.assistant_prefix, stops

    def _render_turns(self, request: GenerationRequest) -> tuple[str, list[str]]:
        if self._formatter is None:
            return (transcript(request.messages) if request.messages else request.prompt), []
        # A chat model given a raw prompt answers it as a single user turn.
        turns = request.messages or (ChatTurn("user", request.prompt),)
        formatted = self._formatter(messages=[{"role": t.role, "content": t.content} for t in turns])
        stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop]
        # An empty stop string would end every generation at once; EOS ends it anyway.
        return formatted.prompt, [stop for stop in stops if stop]

    def generate(self, request: GenerationRequest, on_delta: DeltaSink, cancelled: threading.Event) -> GenerationResult:
        """Token by token, as llama-cpp-python's own loop does, but resumable: the prompt is evaluated as one batch
        and every generated or replayed token one at a time, so a resumed run sees the same logits (a batch of
        prompt and recorded tokens does not), and each position samples with its own seed."""
        prompt = self.prepare(request)
        tokens = prompt.tokens
        sampling = request.sampling
        resumed = list(request.resume_token_ids)
        if len(tokens) + sampling.max_tokens > self._context_limit:
            raise out_of_range(
                f"prompt is {len(tokens)} tokens; with max_tokens={sampling.max_tokens} it exceeds "
                f"the context limit of {self._context_limit}"
            )
        vocab = self._llama.n_vocab()
        if any(token < 0 or token >= vocab for token in resumed):
            raise invalid_argument([FieldViolation("generation.resume_token_ids", f"ids must be in [0, {vocab})")])
        started = time.perf_counter()
        llama = self._llama
        self._evaluate_prompt(tokens)
        for token in resumed:
            llama.eval([token])
        base_seed = sampling.seed if sampling.seed is not None else random.getrandbits(32)
        stops = [*prompt.stops, *sampling.stop]
        generated = list(resumed)
        new_bytes, emitted = b"", 0
        pending_ids: list[int] = []
        pieces: list[str] = []
        first_token_at: float | None = None
        finish_reason = LENGTH

        def emit(text: str) -> None:
            nonlocal emitted, pending_ids
            if text or pending_ids:
                pieces.append(text)
                on_delta(Piece(text, tuple(pending_ids)))
            emitted, pending_ids = len(new_bytes), []

        while len(generated) < sampling.max_tokens:
            if cancelled.is_set():
                finish_reason = CANCELLED
                break
            token = self._sample(generated, sampling, base_seed + len(generated))
            if _is_end_of_generation(llama, token):
                finish_reason = STOP
                break
            first_token_at = first_token_at or time.perf_counter()
            generated.append(token)
            pending_ids.append(token)
            new_bytes += llama.detokenize([token])
            text = _complete_text(new_bytes[emitted:])
            if text is None:
                continue  # a character is still incomplete
            cut = min((i for i in (text.find(stop) for stop in stops) if i >= 0), default=-1)
            if cut >= 0:
                emit(text[:cut])
                finish_reason = STOP
                break
            if not any(_ends_with_prefix(text, stop) for stop in stops):
                emit(text)  # otherwise held back: it may be the start of a stop string
            if len(generated) < sampling.max_tokens:
                llama.eval([token])
        if emitted < len(new_bytes):
            emit(new_bytes[emitted:].decode(errors="ignore"))  # held back, and nothing can complete it now
        new_tokens = len(generated) - len(resumed)
        result = _result("".join(pieces), finish_reason, len(tokens), new_tokens, started, first_token_at)
        return replace(result, resumed_tokens=len(resumed))

    def _evaluate_prompt(self, tokens: list[int]) -> None:
        """All but the last token as one batch, then the last alone, always: a context whose previous prompt had the
        same leading tokens keeps their cache and evaluates only the last, and one that evaluated nothing since this
        very prompt still holds its logits and evaluates nothing. Splitting every prompt the same way is what keeps
        the cached paths' logits bit for bit those of the uncached one (a batch's numerics depend on its size), so a
        resumed generation still matches an uninterrupted one. Repeated prompts then cost what llama-cpp-python's
        server's prefix cache makes them cost (ADR 0019)."""
        llama = self._llama
        if tokens == self._prompt_with_logits and llama.n_tokens == len(tokens):
            self.prompt_cache_hits += 1
            return
        self._prompt_with_logits = []
        head, last = tokens[:-1], tokens[-1:]
        if head and head == self._cached_head:
            llama.n_tokens = len(head)  # eval() drops the cache past this point
            self.prompt_cache_hits += 1
        else:
            self._cached_head = []  # until the new head is evaluated, nothing is known to be cached
            llama.reset()  # type: ignore[no-untyped-call]
            if head:
                llama.eval(head)
            self._cached_head = head
        llama.eval(last)
        self._prompt_with_logits = tokens  # until anything else is evaluated (n_tokens then grows)

    def _sample(self, generated: list[int], sampling: Sampling, seed: int) -> int:
        """One token. A fresh sampler per position, fed the recent tokens for its repeat penalty, seeded with
        request seed + position: the same position draws the same way whether or not the run was resumed."""
        from llama_cpp import _internals

        llama = self._llama
        sampler = _internals.LlamaSampler()  # type: ignore[no-untyped-call]
        try:
            sampler.add_penalties(llama.n_vocab(), PENALTY_LAST_N, sampling.repeat_penalty, 0.0, 0.0)
            if sampling.temperature == 0:
                sampler.add_greedy()  # type: ignore[no-untyped-call]
            else:
                sampler.add_top_k(TOP_K)
                sampler.add_top_p(sampling.top_p, 1)
                sampler.add_min_p(MIN_P, 1)
                sampler.add_temp(sampling.temperature)
                sampler.add_dist(seed & 0xFFFFFFFF)
            for token in generated[-PENALTY_LAST_N:]:
                sampler.accept(token)
            return int(sampler.sample(llama._ctx, -1))
        finally:
            sampler.close()  # type: ignore[no-untyped-call]


def _is_end_of_generation(llama: "Llama", token: int) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llama._model.vocab, token))


def _complete_text(data: bytes) -> str | None:
    """The text of `data`, or None while it ends inside a multi-byte character."""
    try:
        return data.decode()
    except UnicodeDecodeError as error:
        if error.reason == "unexpected end of data":
            return None
        return data.decode(errors="replace")


def _ends_with_prefix(text: str, stop: str) -> bool:
    """Whether text ends with a proper prefix of stop, so the next tokens could complete it."""
    return any(text.endswith(stop[:n]) for n in range(1, len(stop)))


class FakeEngine:
    """Deterministic text and timing behind the real ModelService contract, for timing and chaos tests."""

    def __init__(self, model_id: str, context_limit: int, first_token_ms: float, token_ms: float) -> None:
        self._model_id = model_id
        self._context_limit = context_limit
        self._first_token_s = first_token_ms / 1000
        self._token_s = token_ms / 1000

    def generate(self, request: GenerationRequest, on_delta: DeltaSink, cancelled: threading.Event) -> GenerationResult:
        """Word i of the answer is token id i, so a resumed run continues the same answer exactly."""
        prompt = transcript(request.messages) if request.messages else request.prompt
        prompt_tokens = len(prompt.split()) + len(request.assistant_prefix.split())
        if prompt_tokens + request.sampling.max_tokens > self._context_limit:
            raise out_of_range(f"prompt is {prompt_tokens} tokens; exceeds the context limit of {self._context_limit}")
        resumed = len(request.resume_token_ids)
        if list(request.resume_token_ids) != list(range(resumed)):
            raise invalid_argument([FieldViolation("generation.resume_token_ids", "not tokens this engine generated")])
        started = time.perf_counter()
        digest = hashlib.sha256(f"{self._model_id}|{prompt}".encode()).hexdigest()
        pieces: list[str] = []
        first_token_at: float | None = None
        for index in range(resumed, request.sampling.max_tokens):
            if cancelled.wait(self._first_token_s if index == resumed else self._token_s):
                cut_short = _result("".join(pieces), CANCELLED, prompt_tokens, index - resumed, started, first_token_at)
                return replace(cut_short, resumed_tokens=resumed)
            first_token_at = first_token_at or time.perf_counter()
            word = f"{self._model_id}-{digest[index % 60 : index % 60 + 4]}"
            piece = word if index == 0 and not request.assistant_prefix else " " + word
            pieces.append(piece)
            on_delta(Piece(piece, (index,)))
        result = _result(
            "".join(pieces), LENGTH, prompt_tokens, request.sampling.max_tokens - resumed, started, first_token_at
        )
        return replace(result, resumed_tokens=resumed)


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

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Piece | GenerationResult, None]:
        """Yield text deltas, then the GenerationResult. Closing the iterator early cancels the generation."""
        try:
            engine = await asyncio.wait_for(self._free.get(), self._admission_timeout_s or None)
        except TimeoutError:
            raise resource_exhausted(
                f"all {self._size} contexts busy for {self._admission_timeout_s}s", retry_after_s=1.0
            ) from None
        self._on_load_change()
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[Piece | BaseException | GenerationResult] = asyncio.Queue()
        cancelled = threading.Event()

        def push(piece: Piece) -> None:
            loop.call_soon_threadsafe(deltas.put_nowait, piece)

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

            def release(_: object = None) -> None:
                self._free.put_nowait(engine)
                self._on_load_change()

            # The context goes back only once its thread has stopped, so it is never shared; even when this
            # caller is cancelled while it waits (a client that goes away just as the generation ends).
            try:
                await asyncio.shield(worker)
            finally:
                if worker.done():
                    release()
                else:
                    worker.add_done_callback(release)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        async for item in self.stream(request):
            if isinstance(item, GenerationResult):
                return item
        raise PlatformError("engine ended without a result", "INTERNAL")
