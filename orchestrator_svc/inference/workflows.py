"""InferenceWorkflow: one durable request: (retrieve,) select a model, generate, and fall back when a model fails.

The workflow keeps the record of what was streamed (text and the current model's token ids), so a retried
generation resumes where the stream stopped, a fallback model continues the text, and a stream never lies:
text a client must discard is announced by a new epoch (a reset event). See ADR 0010."""

import asyncio
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    TimeoutError,
    TimeoutType,
)
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from llmorch_common.contracts import (
        CANCELLED,
        EMBED_ACTIVITY,
        GENERATE_ACTIVITY,
        LENGTH,
        PROGRESS_QUERY,
        STREAM_SIGNAL,
        EmbedInput,
        EmbedOutput,
        GenerateInput,
        GenerateOutput,
        GenerationProgress,
        StreamDelta,
    )
    from llmorch_common.errors import (
        ACTIVITY_FAILURES,
        INPUT_ERROR_CODES,
        from_activity_failure,
        input_failure,
        to_final_failure,
        unavailable,
    )
    from orchestrator_svc.inference.activities import SELECT_MODEL_ACTIVITY, SelectModelInput
    from orchestrator_svc.inference.cache import (
        CACHE_HIT,
        CACHE_LOOKUP_ACTIVITY,
        CACHE_MISS,
        CACHE_STORE_ACTIVITY,
        CachedCompletion,
        CacheLookupOutput,
        CacheStoreInput,
        completion_key,
    )
    from orchestrator_svc.inference.contracts import (
        RESTART,
        FallbackRecord,
        InferenceInput,
        InferenceResult,
        ModelChoice,
        PartRecord,
        StreamCursor,
        StreamSnapshot,
    )
    from orchestrator_svc.inference.prompting import augment, fit_citations, prefix_fits, query_text
    from orchestrator_svc.retrieval.activities import RETRIEVE_ACTIVITY, CitationRecord, RetrieveInput

WATCH_STREAM_UPDATE = "watch_stream"
RESULT_UPDATE = "await_result"
SELECT_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=100))
# Runs that started before resumption keep restarting on fallback and end CANCELLED (not with partial text) when
# cancelled, so their recorded histories replay as they ran.
LIFECYCLE_PATCH = "generation-lifecycle-v1"
# The completion cache's lookup and store (local activities): only cacheable requests (cache_ttl_s > 0, which runs
# from before the cache never have) reach the patch, so their histories replay as they ran.
CACHE_PATCH = "completion-cache-v1"
CACHE_CALL_TIMEOUT = timedelta(seconds=2)


class RequestCancelled(Exception):
    """The workflow was cancelled (CancelRequest, or a client disconnect with DISCONNECT_POLICY_CANCEL)."""


def not_started(error: ActivityError) -> bool:
    """No worker of the activity's queue took it within its schedule-to-start bound."""
    cause = error.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


def failure_reason(error: ActivityError) -> str:
    cause = error.cause
    if not_started(error):
        return "saturated: no worker started the generation in time"
    if isinstance(cause, TimeoutError):
        return f"timed out ({cause.type.name if cause.type else 'unknown'})"
    if isinstance(cause, ApplicationError):
        return f"generation failed after retries: {cause.type}: {cause.message}"
    return f"generation failed: {cause}"


@workflow.defn
class InferenceWorkflow:
    def __init__(self) -> None:
        self._attempt = 0
        self._choice: ModelChoice | None = None
        # The answer as streamed in the current epoch; a new epoch (a reset) means earlier text is void.
        self._text = ""
        self._epoch = 0
        self._reset_reason = ""
        # The current selection's own tokens and where its text starts in _text (after continued text).
        self._tokens: list[int] = []
        self._part_start = 0
        self._carried_tokens = 0
        self._parts: list[PartRecord] = []
        self._fallbacks: list[FallbackRecord] = []
        self._lifecycle = False
        self._done = False
        self._result: InferenceResult | None = None
        self._cache = ""

    @workflow.run
    async def run(self, request: InferenceInput) -> InferenceResult:
        started = workflow.now()
        self._lifecycle = workflow.patched(LIFECYCLE_PATCH)
        retrieval_ms = 0.0
        citations: tuple[CitationRecord, ...] = ()
        try:
            retrieved = await self._retrieve(request)
            retrieval_ms = (workflow.now() - started).total_seconds() * 1000 if request.rag else 0.0
            output, chosen, citations = await self._generate_with_fallback(request, retrieved)
            choice: ModelChoice | None = chosen
        except (asyncio.CancelledError, RequestCancelled):
            if not self._lifecycle:
                await self._close()
                raise
            output, choice = self._cancelled_output(), self._choice
        except GeneratorExit:
            raise  # the worker dropped the run from its cache (shutdown or eviction): nothing may be awaited now
        except BaseException:
            await self._close()
            raise
        info = workflow.info()
        self._result = InferenceResult(
            request_id=request.request_id,
            text=output.text,
            finish_reason=output.finish_reason,
            model_id=choice.model_id if choice else "",
            selection_reason=choice.reason if choice else "",
            prompt_tokens=output.prompt_tokens,
            completion_tokens=output.completion_tokens,
            queue_wait_ms=output.queue_wait_ms,
            time_to_first_token_ms=output.time_to_first_token_ms,
            generation_ms=output.generation_ms,
            retrieval_ms=retrieval_ms,
            total_ms=(workflow.now() - started).total_seconds() * 1000,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            fallbacks=tuple(self._fallbacks),
            citations=citations,
            parts=tuple(self._parts),
            priority_class=request.priority_class,
            cache=self._cache,
            trace_id=request.trace_id,
        )
        await self._close()
        return self._result

    async def _close(self) -> None:
        """The run is ending: streaming clients get their last snapshot and a result waiter its answer first."""
        self._done = True
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _cancelled_output(self) -> GenerateOutput:
        """The answer so far, as streamed, when the request was cancelled."""
        if self._choice and (not self._parts or self._parts[-1].selection != self._attempt):
            self._parts.append(self._part(outcome="cancelled"))
        return GenerateOutput(
            text=self._text,
            finish_reason=CANCELLED,
            prompt_tokens=0,
            completion_tokens=self._carried_tokens + len(self._tokens),
            time_to_first_token_ms=0.0,
            generation_ms=0.0,
            model_id=self._choice.model_id if self._choice else "",
        )

    def _part(self, outcome: str, output: GenerateOutput | None = None) -> PartRecord:
        assert self._choice is not None
        return PartRecord(
            model_id=self._choice.model_id,
            selection=self._attempt,
            attempts=output.activity_attempts if output else 0,
            resumed_at_tokens=output.resumed_tokens if output else 0,
            generated_tokens=(output.completion_tokens - output.resumed_tokens) if output else len(self._tokens),
            carried_chars=self._part_start,
            chars=len(self._text) - self._part_start,
            outcome=outcome,
        )

    def _reset(self, reason: str) -> None:
        """Void everything streamed: clients get a reset event, then the answer from its start."""
        self._epoch += 1
        self._reset_reason = reason
        self._text = ""
        self._carried_tokens = 0
        self._parts = [replace(part, outcome=f"discarded ({reason})") for part in self._parts]

    def _begin_selection(
        self, request: InferenceInput, grounded: InferenceInput, attempt: int, choice: ModelChoice
    ) -> tuple[str, int]:
        """Start a selection's part: continue the text so far (the prefix) or restart; returns the prefix and
        the max_tokens left for this model."""
        self._attempt, self._choice = attempt, choice
        if not self._lifecycle:
            if self._text:
                self._epoch += 1
                self._reset_reason = f"fallback to {choice.model_id} restarts the answer"
            self._text, self._tokens, self._part_start = "", [], 0
            return "", request.sampling.max_tokens
        if self._text:
            self._carried_tokens += len(self._tokens)
            remaining = request.sampling.max_tokens - self._carried_tokens
            if request.on_fallback == RESTART:
                self._reset(f"fallback to {choice.model_id} restarts the answer (policy restart)")
            elif not prefix_fits(grounded, self._text, max(remaining, 0), choice.context_limit):
                self._reset(f"fallback to {choice.model_id} restarts the answer (the text so far does not fit)")
        self._tokens, self._part_start = [], len(self._text)
        return self._text, request.sampling.max_tokens - self._carried_tokens

    def _settle(self, part_text: str) -> str:
        """The final answer; the stream record becomes exactly it (a reset if it ever disagreed)."""
        final = self._text[: self._part_start] + part_text
        if not final.startswith(self._text):
            self._epoch += 1
            self._reset_reason = "the generation's final text differs from what was streamed"
        self._text = final
        return final

    async def _retrieve(self, request: InferenceInput) -> tuple[CitationRecord, ...]:
        """Embed the question on the embedding model's queue, then search the collection (a local activity)."""
        if request.rag is None:
            return ()
        rag = request.rag
        try:
            embedded: EmbedOutput = await workflow.execute_activity(
                EMBED_ACTIVITY,
                EmbedInput((query_text(request),)),
                result_type=EmbedOutput,
                task_queue=rag.embedding_task_queue,
                # Without an embedding worker the query would wait for the whole request timeout: give up as a
                # saturated model's queue does.
                schedule_to_start_timeout=timedelta(seconds=request.policy.saturation_timeout_s),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=sorted(INPUT_ERROR_CODES)),
            )
            hits: list[CitationRecord] = await workflow.execute_local_activity(
                RETRIEVE_ACTIVITY,
                RetrieveInput(rag.collection, embedded.vectors[0], rag.top_k, query_text(request), rag.mode),
                result_type=list[CitationRecord],
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=SELECT_RETRY,
            )
        except ACTIVITY_FAILURES as error:
            self._raise_if_cancelled(error)
            if isinstance(error, ActivityError) and not_started(error):
                waited = f"{request.policy.saturation_timeout_s:g} s"
                raise to_final_failure(
                    unavailable(f"retrieval failed: no embedding worker took the query within {waited}")
                ) from None
            raise from_activity_failure(error, "retrieval failed: ") from None
        return tuple(hits)

    async def _generate_with_fallback(
        self, request: InferenceInput, retrieved: tuple[CitationRecord, ...]
    ) -> tuple[GenerateOutput, ModelChoice, tuple[CitationRecord, ...]]:
        policy = request.policy
        fallbacks = self._fallbacks
        for attempt in range(1, policy.max_selections + 1):
            choice = await self._select(request, fallbacks)
            # Each model has its own context limit, so the grounding is fitted per selection.
            citations = fit_citations(
                retrieved, len(query_text(request)), choice.context_limit, request.sampling.max_tokens
            )
            grounded = augment(request, citations)
            prefix, max_tokens = self._begin_selection(request, grounded, attempt, choice)
            workflow.logger.info("attempt %d: %s chosen (%s)", attempt, choice.model_id, choice.reason)
            if max_tokens <= 0:  # earlier models generated the whole budget before failing
                self._parts.append(self._part("completed"))
                return self._complete_without_model(choice), choice, citations
            cache_key = ""
            if attempt == 1 and request.cache_ttl_s > 0 and workflow.patched(CACHE_PATCH):
                cache_key = completion_key(
                    request.tenant,
                    choice.model_id,
                    choice.model_digest,
                    grounded.messages,
                    grounded.prompt,
                    request.sampling,
                    citations,
                )
                cached = await self._cache_lookup(cache_key)
                if cached:
                    return self._from_cache(cached, choice), choice, citations
            try:
                try:
                    output = await self._generate(request, choice, attempt, grounded, prefix, max_tokens)
                except ActivityError as error:
                    refused = input_failure(error)
                    if not (prefix and refused and refused.type == "OUT_OF_RANGE"):
                        raise
                    # The continued text did not fit after all (the fit check is an estimate): start over.
                    self._reset(f"{choice.model_id} cannot fit the text so far; it restarts the answer")
                    self._tokens, self._part_start = [], 0
                    prefix, max_tokens = "", request.sampling.max_tokens
                    output = await self._generate(request, choice, attempt, grounded, prefix, max_tokens)
            except ActivityError as error:
                self._raise_if_cancelled(error)
                final = input_failure(error)
                if final:
                    raise final from None
                fallbacks.append(FallbackRecord(choice.model_id, failure_reason(error)))
                if self._lifecycle:
                    if not request.stream:
                        self._absorb_heartbeat(error)
                    self._parts.append(self._part(f"failed: {fallbacks[-1].reason}"))
                workflow.logger.warning("falling back from %s: %s", choice.model_id, fallbacks[-1].reason)
                continue
            text = self._settle(output.text)
            if self._lifecycle:
                self._parts.append(self._part("completed", output))
                output = replace(output, text=text, completion_tokens=self._carried_tokens + output.completion_tokens)
            if cache_key and output.finish_reason != CANCELLED:
                completion = CachedCompletion(
                    text, output.finish_reason, output.prompt_tokens, output.completion_tokens
                )
                await self._cache_store(CacheStoreInput(cache_key, completion, request.cache_ttl_s))
            return output, choice, citations
        raise to_final_failure(unavailable(f"gave up after {policy.max_selections} selections: {_tried(fallbacks)}"))

    async def _cache_lookup(self, key: str) -> CachedCompletion | None:
        """A failed lookup is a miss: the cache never fails a request."""
        self._cache = CACHE_MISS
        try:
            found: CacheLookupOutput = await workflow.execute_local_activity(
                CACHE_LOOKUP_ACTIVITY,
                key,
                result_type=CacheLookupOutput,
                start_to_close_timeout=CACHE_CALL_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ACTIVITY_FAILURES as error:
            self._raise_if_cancelled(error)
            return None
        if found.completion:
            self._cache = CACHE_HIT
        return found.completion

    async def _cache_store(self, request: CacheStoreInput) -> None:
        try:
            await workflow.execute_local_activity(
                CACHE_STORE_ACTIVITY,
                request,
                result_type=bool,
                start_to_close_timeout=CACHE_CALL_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ACTIVITY_FAILURES as error:
            self._raise_if_cancelled(error)

    def _from_cache(self, cached: CachedCompletion, choice: ModelChoice) -> GenerateOutput:
        """A hit is the answer, recorded in this run's history: no model runs, and its stream shows the text."""
        output = GenerateOutput(
            text=self._settle(cached.text),
            finish_reason=cached.finish_reason,
            prompt_tokens=cached.prompt_tokens,
            completion_tokens=cached.completion_tokens,
            time_to_first_token_ms=0.0,
            generation_ms=0.0,
            model_id=choice.model_id,
            activity_attempts=0,
        )
        if self._lifecycle:
            self._parts.append(self._part("cache hit", output))
        return output

    def _raise_if_cancelled(self, error: FailureError) -> None:
        """An activity cancelled because the workflow was: the request ends CANCELLED with its text so far."""
        if self._lifecycle and CancelledError in (type(error), type(error.cause)):
            raise RequestCancelled() from None

    async def _generate(
        self,
        request: InferenceInput,
        choice: ModelChoice,
        attempt: int,
        grounded: InferenceInput,
        prefix: str,
        max_tokens: int,
    ) -> GenerateOutput:
        policy = request.policy
        output: GenerateOutput = await workflow.execute_activity(
            GENERATE_ACTIVITY,
            GenerateInput(
                request_id=request.request_id,
                messages=grounded.messages,
                prompt=grounded.prompt,
                sampling=replace(request.sampling, max_tokens=max_tokens),
                stream_to_workflow_id=workflow.info().workflow_id if request.stream else "",
                attempt=attempt,
                assistant_prefix=prefix,
            ),
            result_type=GenerateOutput,
            task_queue=choice.task_queue,
            start_to_close_timeout=timedelta(seconds=policy.generate_timeout_s),
            heartbeat_timeout=timedelta(seconds=policy.heartbeat_timeout_s),
            # Queued on purpose (every model full) means wait; otherwise a slow start means saturated.
            schedule_to_start_timeout=None if choice.queued else timedelta(seconds=policy.saturation_timeout_s),
            retry_policy=RetryPolicy(
                maximum_attempts=policy.generate_attempts,
                initial_interval=timedelta(milliseconds=200),
                non_retryable_error_types=sorted(INPUT_ERROR_CODES),
            ),
            # A cancelled request ends only once the model has stopped and freed its context.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        return output

    def _absorb_heartbeat(self, error: ActivityError) -> None:
        """Without a stream, a model that died after heartbeating leaves its progress in the timeout: the next
        model can continue from it too (the SDK throttles heartbeats, so it may trail by a few seconds)."""
        cause = error.cause
        if not isinstance(cause, TimeoutError) or not cause.last_heartbeat_details:
            return
        details = cause.last_heartbeat_details[0]
        if isinstance(details, dict) and isinstance(details.get("text"), str):
            self._tokens = [int(token) for token in details.get("token_ids", ())]
            self._text = self._text[: self._part_start] + details["text"]

    def _complete_without_model(self, choice: ModelChoice) -> GenerateOutput:
        return GenerateOutput(
            text=self._text,
            finish_reason=LENGTH,
            prompt_tokens=0,
            completion_tokens=self._carried_tokens,
            time_to_first_token_ms=0.0,
            generation_ms=0.0,
            model_id=choice.model_id,
        )

    async def _select(self, request: InferenceInput, fallbacks: list[FallbackRecord]) -> ModelChoice:
        if request.first_choice and not fallbacks:
            return request.first_choice
        try:
            choice: ModelChoice = await workflow.execute_local_activity(
                SELECT_MODEL_ACTIVITY,
                SelectModelInput(request.model_id, tuple(f.model_id for f in fallbacks), len(fallbacks) + 1),
                result_type=ModelChoice,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=SELECT_RETRY,
            )
            return choice
        except ACTIVITY_FAILURES as error:
            self._raise_if_cancelled(error)
            raise from_activity_failure(error, suffix=f"; tried: {_tried(fallbacks)}" if fallbacks else "") from None

    @workflow.signal(name=STREAM_SIGNAL)
    def append_delta(self, delta: StreamDelta) -> None:
        # Deltas from an abandoned attempt arrive late sometimes; they must not leak into the new answer.
        if delta.attempt != self._attempt:
            return
        if delta.start < 0:  # a worker from before resumption: no positions to check
            self._text += delta.text
            return
        # Only a delta that continues the record is kept: a retry resumes exactly where it ends, and a late or
        # repeated delta is dropped rather than doubling text (the final text settles any gap).
        if delta.start == len(self._tokens):
            self._tokens.extend(delta.token_ids)
            self._text += delta.text

    @workflow.query(name=PROGRESS_QUERY)
    def generation_progress(self, attempt: int) -> GenerationProgress:
        """What the selection streamed so far: where a retried generate activity resumes."""
        if attempt != self._attempt:
            return GenerationProgress(self._attempt)
        return GenerationProgress(attempt, tuple(self._tokens), self._text[self._part_start :])

    @workflow.update(name=RESULT_UPDATE)
    async def await_result(self) -> InferenceResult | None:
        """The result as soon as it is recorded, for update-with-start (ADR 0019); None when the run ends without
        one, whose failure is then the run's own."""
        await workflow.wait_condition(lambda: self._done)
        return self._result

    @workflow.update(name=WATCH_STREAM_UPDATE)
    async def watch_stream(self, cursor: StreamCursor) -> StreamSnapshot:
        """Long-poll: returns once there is text past the cursor, a new selection, a reset, or the end."""

        def stale() -> bool:
            return 0 <= cursor.epoch != self._epoch

        await workflow.wait_condition(
            lambda: self._done or self._attempt != cursor.attempt or stale() or len(self._text) > cursor.offset
        )
        reset = stale()
        offset = 0 if reset or cursor.epoch < 0 else cursor.offset
        choice = self._choice
        return StreamSnapshot(
            attempt=self._attempt,
            model_id=choice.model_id if choice else "",
            reason=choice.reason if choice else "",
            text=self._text[offset:],
            offset=offset,
            done=self._done,
            epoch=self._epoch,
            reset=reset,
            reset_reason=self._reset_reason if reset else "",
        )


def _tried(fallbacks: list[FallbackRecord]) -> str:
    return "; ".join(f"{f.model_id} ({f.reason})" for f in fallbacks) or "nothing"
