"""InferenceWorkflow: one durable request: (retrieve,) select a model, generate, and fall back when a model fails."""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType

with workflow.unsafe.imports_passed_through():
    from llmorch_common.contracts import (
        EMBED_ACTIVITY,
        GENERATE_ACTIVITY,
        STREAM_SIGNAL,
        EmbedInput,
        EmbedOutput,
        GenerateInput,
        GenerateOutput,
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
    from orchestrator_svc.inference.contracts import (
        FallbackRecord,
        InferenceInput,
        InferenceResult,
        ModelChoice,
        StreamCursor,
        StreamSnapshot,
    )
    from orchestrator_svc.inference.prompting import augment, fit_citations, query_text
    from orchestrator_svc.retrieval.activities import RETRIEVE_ACTIVITY, CitationRecord, RetrieveInput

WATCH_STREAM_UPDATE = "watch_stream"
SELECT_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=100))


def failure_reason(error: ActivityError) -> str:
    cause = error.cause
    if isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START:
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
        self._text = ""
        self._done = False

    @workflow.run
    async def run(self, request: InferenceInput) -> InferenceResult:
        started = workflow.now()
        try:
            retrieved = await self._retrieve(request)
            retrieval_ms = (workflow.now() - started).total_seconds() * 1000 if request.rag else 0.0
            output, choice, fallbacks, citations = await self._generate_with_fallback(request, retrieved)
        finally:
            self._done = True
            # Streaming clients get their last snapshot before the run closes.
            await workflow.wait_condition(workflow.all_handlers_finished)
        info = workflow.info()
        return InferenceResult(
            request_id=request.request_id,
            text=output.text,
            finish_reason=output.finish_reason,
            model_id=choice.model_id,
            selection_reason=choice.reason,
            prompt_tokens=output.prompt_tokens,
            completion_tokens=output.completion_tokens,
            queue_wait_ms=output.queue_wait_ms,
            time_to_first_token_ms=output.time_to_first_token_ms,
            generation_ms=output.generation_ms,
            retrieval_ms=retrieval_ms,
            total_ms=(workflow.now() - started).total_seconds() * 1000,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            fallbacks=tuple(fallbacks),
            citations=citations,
        )

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
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=sorted(INPUT_ERROR_CODES)),
            )
            hits: list[CitationRecord] = await workflow.execute_local_activity(
                RETRIEVE_ACTIVITY,
                RetrieveInput(rag.collection, embedded.vectors[0], rag.top_k),
                result_type=list[CitationRecord],
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=SELECT_RETRY,
            )
        except ACTIVITY_FAILURES as error:
            raise from_activity_failure(error, "retrieval failed: ") from None
        return tuple(hits)

    async def _generate_with_fallback(
        self, request: InferenceInput, retrieved: tuple[CitationRecord, ...]
    ) -> tuple[GenerateOutput, ModelChoice, list[FallbackRecord], tuple[CitationRecord, ...]]:
        policy = request.policy
        fallbacks: list[FallbackRecord] = []
        for attempt in range(1, policy.max_selections + 1):
            choice = await self._select(request, fallbacks)
            self._attempt, self._choice, self._text = attempt, choice, ""
            # Each model has its own context limit, so the grounding is fitted per selection.
            citations = fit_citations(
                retrieved, len(query_text(request)), choice.context_limit, request.sampling.max_tokens
            )
            grounded = augment(request, citations)
            workflow.logger.info("attempt %d: %s chosen (%s)", attempt, choice.model_id, choice.reason)
            try:
                output: GenerateOutput = await workflow.execute_activity(
                    GENERATE_ACTIVITY,
                    GenerateInput(
                        request_id=request.request_id,
                        messages=grounded.messages,
                        prompt=grounded.prompt,
                        sampling=request.sampling,
                        stream_to_workflow_id=workflow.info().workflow_id if request.stream else "",
                        attempt=attempt,
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
                )
                return output, choice, fallbacks, citations
            except ActivityError as error:
                final = input_failure(error)
                if final:
                    raise final from None
                fallbacks.append(FallbackRecord(choice.model_id, failure_reason(error)))
                workflow.logger.warning("falling back from %s: %s", choice.model_id, fallbacks[-1].reason)
        raise to_final_failure(unavailable(f"gave up after {policy.max_selections} selections: {_tried(fallbacks)}"))

    async def _select(self, request: InferenceInput, fallbacks: list[FallbackRecord]) -> ModelChoice:
        try:
            choice: ModelChoice = await workflow.execute_local_activity(
                SELECT_MODEL_ACTIVITY,
                SelectModelInput(request.model_id, tuple(f.model_id for f in fallbacks)),
                result_type=ModelChoice,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=SELECT_RETRY,
            )
            return choice
        except ACTIVITY_FAILURES as error:
            raise from_activity_failure(error, suffix=f"; tried: {_tried(fallbacks)}" if fallbacks else "") from None

    @workflow.signal(name=STREAM_SIGNAL)
    def append_delta(self, delta: StreamDelta) -> None:
        # Deltas from an abandoned attempt arrive late sometimes; they must not leak into the new answer.
        if delta.attempt == self._attempt:
            self._text += delta.text

    @workflow.update(name=WATCH_STREAM_UPDATE)
    async def watch_stream(self, cursor: StreamCursor) -> StreamSnapshot:
        """Long-poll: returns once there is text past the cursor, a new attempt, or the end."""
        await workflow.wait_condition(
            lambda: self._done or self._attempt != cursor.attempt or len(self._text) > cursor.offset
        )
        same_attempt = self._attempt == cursor.attempt
        offset = cursor.offset if same_attempt else 0
        choice = self._choice
        return StreamSnapshot(
            attempt=self._attempt,
            model_id=choice.model_id if choice else "",
            reason=choice.reason if choice else "",
            text=self._text[offset:],
            offset=offset,
            done=self._done,
        )


def _tried(fallbacks: list[FallbackRecord]) -> str:
    return "; ".join(f"{f.model_id} ({f.reason})" for f in fallbacks) or "nothing"
