"""The OpenAI-compatible facade through Envoy, with the official openai SDK (sync and async, streaming and not), on
one stack: the fake engine behind the real ModelService, the real embedding model."""

import json
import math
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import openai
import pytest
from helpers import eventually
from llmorch.internal.v1 import embedding_pb2, embedding_pb2_grpc
from openai.types.chat import ChatCompletionMessageParam

from llmorch_common import constants as c
from orchestrator_svc.inference.service import workflow_id
from tools.stack import DEV_TENANT, ModelGroup, Stack, StackConfig

pytestmark = pytest.mark.slow
MODEL = c.DEFAULT_MODEL_ID
MAX_IN_FLIGHT = 3
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    # A context of 8192 lets the 429 test hold streams of 4096 tokens (about 4 s each) open.
    settings = (("fake_first_token_ms", "5"), ("fake_token_ms", "1"), ("context_limit", "8192"))
    fake = ModelGroup(MODEL, "fake", 1, 8, settings)
    config = StackConfig(models=(fake,), orchestrator_env=(("ORCH_MAX_IN_FLIGHT", str(MAX_IN_FLIGHT)),))
    async with Stack(config) as started:
        yield started


@pytest.fixture(scope="module")
def api_key(stack: Stack) -> str:
    return stack.api_key  # the stack's dev key, the one the gRPC API takes too


@pytest.fixture
def client(stack: Stack, api_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.openai_base_url, api_key=api_key, max_retries=0, timeout=60) as sync:
        yield sync


@pytest.fixture
async def aclient(stack: Stack, api_key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=stack.openai_base_url, api_key=api_key, max_retries=0, timeout=60) as aio:
        yield aio


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"http-{uuid.uuid4().hex}"}


def test_chat_returns_the_answer_with_usage_and_provenance(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, max_tokens=12)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    provenance = (completion.model_extra or {})["llmorch"]
    assert provenance["model_id"] == MODEL and provenance["selection_reason"]
    assert raw.headers["x-llmorch-model"] == MODEL
    expected = workflow_id(DEV_TENANT, provenance["request_id"])  # the dev key's tenant
    assert raw.headers["x-llmorch-workflow-id"] == provenance["workflow_id"] == expected


def test_auto_lets_the_router_choose(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="auto", messages=HELLO, max_tokens=4)
    assert completion.model == MODEL
    assert "default" in (completion.model_extra or {})["llmorch"]["selection_reason"].lower()


async def test_streaming_chat_spells_the_answer_and_reattaches_by_idempotency_key(
    aclient: openai.AsyncOpenAI,
) -> None:
    headers = key()
    stream = await aclient.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    assert text and finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0
    # The same key and body: the same workflow and run, not a second generation.
    again = await aclient.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=16, temperature=0, extra_headers=headers
    )
    assert again.choices[0].message.content == text
    provenance = (again.model_extra or {})["llmorch"]
    assert provenance["request_id"] == headers["Idempotency-Key"]
    assert again.usage is not None and again.usage.completion_tokens == usage.completion_tokens


def test_completions_sync_and_streaming(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, seed=7)
    assert completion.object == "text_completion" and completion.choices[0].text
    streamed = "".join(
        chunk.choices[0].text
        for chunk in client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, stream=True)
        if chunk.choices
    )
    assert streamed


async def test_models_lists_what_is_registered(aclient: openai.AsyncOpenAI) -> None:
    ids = {model.id async for model in aclient.models.list()}
    assert {MODEL, c.EMBEDDING_MODEL_ID} <= ids
    assert (await aclient.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError):
        await aclient.models.retrieve("no-such-model")


async def test_embeddings_equal_the_embedding_service(stack: Stack, aclient: openai.AsyncOpenAI) -> None:
    texts = ["The walrus operator assigns inside an expression.", "Generators yield values lazily.", ""]
    as_base64 = await aclient.embeddings.create(model=c.EMBEDDING_MODEL_ID, input=texts)  # the SDK's default
    as_float = await aclient.embeddings.create(model="auto", input=texts, encoding_format="float")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.embed}") as channel:
        reference = await embedding_pb2_grpc.EmbeddingServiceStub(channel).Embed(
            embedding_pb2.EmbedRequest(texts=texts), timeout=60
        )
    assert as_base64.usage.prompt_tokens == sum(e.token_count for e in reference.embeddings)
    for response in (as_base64, as_float):
        assert [d.index for d in response.data] == [0, 1, 2]
        for datum, expected in zip(response.data, reference.embeddings, strict=True):
            assert cosine(datum.embedding, list(expected.values)) >= 0.9999


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else float(a == b)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
    ],
)
def test_unsupported_or_bad_parameters_are_400s_that_name_them(
    client: openai.OpenAI, extra: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=HELLO, **extra)  # type: ignore[call-overload]
    assert raised.value.status_code == 400
    assert raised.value.param == param, raised.value.body


def test_a_request_without_model_is_a_400(stack: Stack, api_key: str) -> None:
    auth = {"authorization": f"Bearer {api_key}"}
    error = post_error(f"{stack.openai_base_url}/chat/completions", {"messages": HELLO}, auth)
    assert error.code == 400
    assert json.loads(error.read())["error"]["param"] == "model"


def test_a_wrong_key_is_a_401(stack: Stack) -> None:
    wrong = "llmo_0123456789abcdef_" + "x" * 43
    with (
        openai.OpenAI(base_url=stack.openai_base_url, api_key=wrong, max_retries=0) as stranger,
        pytest.raises(openai.AuthenticationError) as raised,
    ):
        stranger.chat.completions.create(model=MODEL, messages=HELLO)
    assert raised.value.code == "UNAUTHENTICATED"


def test_a_missing_key_is_a_401(stack: Stack) -> None:
    """The SDK always sends a key; curl need not."""
    error = post_error(f"{stack.openai_base_url}/chat/completions", {"model": MODEL, "messages": HELLO}, {})
    assert error.code == 401
    assert json.loads(error.read())["error"]["type"] == "authentication_error"


def post_error(url: str, body: dict[str, object], headers: dict[str, str]) -> urllib.error.HTTPError:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json", **headers})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=30)
    return raised.value


def test_an_unknown_model_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert raised.value.code == "NOT_FOUND"


def test_an_idempotency_key_reused_for_another_body_is_a_409(client: openai.OpenAI) -> None:
    headers = key()
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4, extra_headers=headers)
    with pytest.raises(openai.ConflictError):
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5, extra_headers=headers)


async def test_a_full_api_replica_answers_429_with_retry_after(aclient: openai.AsyncOpenAI) -> None:
    """MAX_IN_FLIGHT open streams fill the replica; the next request is told when to come back."""
    streams = [
        await aclient.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4096, stream=True)
        for _ in range(MAX_IN_FLIGHT)
    ]
    try:
        with pytest.raises(openai.RateLimitError) as raised:
            await aclient.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
        assert int(raised.value.response.headers["retry-after"]) >= 1
    finally:
        for stream in streams:
            await stream.close()

    async def admitted_again() -> bool:
        """The closed streams leave admission as their handlers notice the disconnect, a moment later."""
        try:
            return bool(await aclient.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2))
        except openai.RateLimitError:
            return False

    await eventually(admitted_again, timeout_s=30, interval_s=0.2)


async def test_no_model_left_is_a_503(stack: Stack, aclient: openai.AsyncOpenAI) -> None:
    """Last in the module: it stops the only LLM."""
    await stack.child(f"model-{MODEL}-0").terminate()

    async def unavailable() -> bool:
        try:
            await aclient.chat.completions.create(model="auto", messages=HELLO, max_tokens=2)
        except openai.InternalServerError as error:
            return error.status_code == 503
        return False

    assert await eventually(unavailable, timeout_s=60, interval_s=0.5)
