"""Random well-typed and byte-level requests to every public RPC of one fake-engine stack, with the dev key, without
one and with wrong ones, through Envoy and straight to the API port: every answer is OK or a precise status (never
UNKNOWN or INTERNAL), every call without a valid key is UNAUTHENTICATED, and the API and Envoy stay SERVING."""

import asyncio
import functools
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from e2e.conftest_envoy import EnvoyProcess
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2
from helpers import IMPRECISE, health_status, method_path, public_methods, raw_answer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

from llmorch_common.constants import DEFAULT_MODEL_ID, READINESS_SERVICE
from llmorch_common.grpc_edge import make_channel
from llmorch_common.validation import REQUEST_ID_PATTERN, ROLES
from orchestrator_svc.identity.keys import KEY_FORMAT, KEY_PREFIX, parse_key
from orchestrator_svc.retrieval.service import INGESTION_PREFIX, PUBLIC_COLLECTION_NAME
from tools.stack import DEV_TENANT, Stack, fake_stack

pytestmark = pytest.mark.slow

MAX_TOKENS = 8  # every generation the fuzz can start stays this short, so thousands of requests fit in CI
GENERATE_REQUEST = orchestrator_pb2.GenerateRequest.DESCRIPTOR
GENERATE_STREAM_REQUEST = orchestrator_pb2.GenerateStreamRequest.DESCRIPTOR
MIN_REQUESTS = 2000
# Calls per hypothesis example, all sent at once, and examples: BATCHES * (WITH_KEY + WITHOUT_KEY) >= MIN_REQUESTS.
WITH_KEY, WITHOUT_KEY, BATCHES = 24, 40, 35
# Of the calls with the key, those to Generate or GenerateStream: a valid one runs a whole workflow, by far the
# costliest call, so a few per batch keep the module within its CI time while every batch still starts some.
GENERATIONS = 3
CALL_TIMEOUT_S = 30.0
ROUTES = ("envoy", "api")
ROUTE = st.sampled_from(ROUTES)
CREDENTIALS = ("with the key", "without a valid key")
METHODS = public_methods()
SERVING = health_pb2.HealthCheckResponse.SERVING

# What was sent, by route and credential, and what came back: the last test checks the totals.
SENT: Counter[str] = Counter()
ANSWERS: Counter[str] = Counter()

# ---------------------------------------------------------------------------------------------------------------
# Requests built from the proto descriptors: "tame" values that pass validation often enough to reach the services,
# and "wild" ones (any value of the field's type, far too long strings, NaN, unknown enum numbers).

REQUEST_IDS = st.sampled_from(("fuzz-0", "fuzz-1", "fuzz-2")) | st.from_regex(REQUEST_ID_PATTERN, fullmatch=True)
COLLECTIONS = st.sampled_from(("fuzz-a", "fuzz-b")) | st.from_regex(PUBLIC_COLLECTION_NAME, fullmatch=True)
# By field name, or full name where one name means different things.
HINTS: dict[str, st.SearchStrategy[Any]] = {
    # Names no collection can have (see `quick`), some of them unsafe as a table or path name.
    "llmorch.v1.RagOptions.collection": st.sampled_from(("Fuzz-A", "dev.fuzz-a", "../fuzz-a", "fuzz a")),
    "request_id": REQUEST_IDS,
    "prompt": st.sampled_from(("Say hi.", "Count to three.")),
    "role": st.sampled_from(ROLES),
    "model_id": st.sampled_from((DEFAULT_MODEL_ID, "no-such-model")),
    "collection": COLLECTIONS,
    "name": COLLECTIONS,
    "ingestion_id": st.from_regex(rf"{INGESTION_PREFIX}{DEV_TENANT}\.[0-9a-f]{{32}}", fullmatch=True),
    "top_k": st.integers(-1, 60),
    "temperature": st.floats(0, 2, width=32),
    "top_p": st.floats(0, 1, width=32),
    "repeat_penalty": st.floats(1, 2, width=32),
}
# Fields a tame message always has, so that tame requests pass validation often.
TAME_REQUIRED = frozenset(
    {"llmorch.v1.GenerateStreamRequest.request", "llmorch.v1.ChatMessage.role", "llmorch.v1.ChatMessage.content"}
)
TAME_TEXT = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=24)
# Past every length limit of the API (request ids, collection names, stop strings, texts, prompts).
LONG_TEXT = st.sampled_from((129, 20_001, 100_001)).map(lambda n: "x" * n)
WILD_TEXT = st.text(max_size=64) | LONG_TEXT
INTS = {
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: st.integers(0, 2**64 - 1),
}


@functools.cache
def value_of(field: FieldDescriptor, wild: bool) -> st.SearchStrategy[Any]:
    """One value of a (singular) field."""
    kind = field.type
    if field.message_type is not None:
        return message_of(field.message_type, wild)
    if field.enum_type is not None:
        known = st.sampled_from([value.number for value in field.enum_type.values])
        return known | INTS[FieldDescriptor.TYPE_INT32] if wild else known
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    wild_value: st.SearchStrategy[Any]
    if kind == FieldDescriptor.TYPE_STRING:
        wild_value = WILD_TEXT
    elif kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        wild_value = st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    else:
        wild_value = INTS[kind]
    hint = HINTS.get(field.full_name, HINTS.get(field.name))
    tame: dict[int, st.SearchStrategy[Any]] = {
        FieldDescriptor.TYPE_STRING: TAME_TEXT,
        FieldDescriptor.TYPE_FLOAT: st.floats(0, 1, width=32),
    }
    tame_value = hint if hint is not None else tame.get(kind, st.integers(0, 8))
    return tame_value | wild_value if wild else tame_value


def contents_of(field: FieldDescriptor, wild: bool) -> st.SearchStrategy[Any]:
    """What the message constructor takes for a field: a value, a list (repeated) or a dict (map)."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = (value_of(entry, wild) for entry in field.message_type.fields)
        return st.dictionaries(key, value, max_size=3)
    if field.is_repeated:
        return st.lists(value_of(field, wild), max_size=4)
    return value_of(field, wild)


@functools.cache
def message_of(descriptor: Descriptor, wild: bool) -> st.SearchStrategy[Message]:
    """A message of `descriptor` with any subset of its fields set (a tame one always has those in TAME_REQUIRED).
    Strategies are built once: made inside a draw, building and validating them is most of hypothesis's time."""
    message_class = message_factory.GetMessageClass(descriptor)
    contents = {field.name: contents_of(field, wild) for field in descriptor.fields}
    required = {field.name for field in descriptor.fields if not wild and field.full_name in TAME_REQUIRED}
    optional = {name: values for name, values in contents.items() if name not in required}
    values = st.fixed_dictionaries({name: contents[name] for name in required}, optional=optional)
    return values.map(lambda fields: message_class(**fields))


def generation_of(message: Message) -> orchestrator_pb2.GenerateRequest | None:
    """The GenerateRequest a request of a Generate method carries, if it is one."""
    if message.DESCRIPTOR is GENERATE_REQUEST:
        return message  # type: ignore[return-value]
    if message.DESCRIPTOR is GENERATE_STREAM_REQUEST:
        return message.request  # type: ignore[attr-defined,no-any-return]
    return None


def encoded(message: Message, max_tokens: int, tame: bool) -> bytes:
    """The request's bytes. A generation asks for `max_tokens` (at most MAX_TOKENS: some bad numbers, some good);
    a tame one has either a prompt or messages, as the API requires."""
    generation = generation_of(message)
    if generation is not None:
        generation.sampling.max_tokens = max_tokens
        if tame and generation.messages:
            generation.ClearField("prompt")
        elif tame and not generation.prompt.strip():
            generation.prompt = "Say hi."
    return message.SerializeToString()


def typed_request(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    """A well-typed request: tame (values that pass validation often enough to reach the services) or wild."""
    tame = st.builds(encoded, message_of(method.input_type, False), st.integers(1, MAX_TOKENS), st.just(True))
    wild = st.builds(encoded, message_of(method.input_type, True), st.integers(-(2**31), MAX_TOKENS), st.just(False))
    return tame | wild


# Byte edits of a valid encoding: (what, where, bytes to insert, or whose length is cut out, or whose first byte is
# xor-ed in).
EDITS = st.lists(
    st.tuples(
        st.sampled_from(("flip", "insert", "delete", "truncate")),
        st.integers(0, 2**16),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def mutated(payload: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    """A valid encoding with bytes flipped, inserted, cut out or cut off: broken lengths, tags and UTF-8."""
    data = bytearray(payload)
    for edit, where, chunk in edits:
        at = where % (len(data) + 1)
        if edit == "insert" or not data:
            data[at:at] = chunk
        elif edit == "flip":
            data[min(at, len(data) - 1)] ^= chunk[0] or 1
        elif edit == "delete":
            del data[at : at + len(chunk)]
        else:
            del data[at:]
    return bytes(data)


def quick(method: MethodDescriptor, payload: bytes) -> bool:
    """Whether the generation that `payload` may start is quick: at most MAX_TOKENS, and no retrieval. This stack has
    no embedding service, so a RAG request on a collection that exists waits (durably) for one to come, as long as
    its deadline allows; its collection is therefore never a name that CreateCollection accepts."""
    try:
        generation = generation_of(message_factory.GetMessageClass(method.input_type).FromString(payload))
    except DecodeError:
        return True
    if generation is None or not (generation.prompt.strip() or generation.messages):
        return True
    capped = generation.sampling.HasField("max_tokens") and generation.sampling.max_tokens <= MAX_TOKENS
    return capped and not PUBLIC_COLLECTION_NAME.fullmatch(generation.rag.collection)


def payloads(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    typed = typed_request(method)
    byte_level = st.builds(mutated, typed, EDITS) | st.binary(max_size=64)
    return (typed | byte_level).filter(lambda payload: quick(method, payload))


def calls(methods: list[MethodDescriptor]) -> st.SearchStrategy[tuple[MethodDescriptor, bytes]]:
    return st.one_of([st.tuples(st.just(method), payloads(method)) for method in methods])


GENERATE_METHODS = [method for method in METHODS if method.input_type in (GENERATE_REQUEST, GENERATE_STREAM_REQUEST)]
CALLS = calls(METHODS)
GENERATION_CALLS = calls(GENERATE_METHODS)
OTHER_CALLS = calls([method for method in METHODS if method not in GENERATE_METHODS])

# Authorization headers that must all be refused (None: no header at all).
SECRET = st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True)
PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@functools.cache
def wrong_authorizations(dev_key: str) -> st.SearchStrategy[str | None]:
    """Headers that are no key (None: none at all), or a key that does not exist, or the dev key spoilt."""
    return st.one_of(
        st.none(),
        PRINTABLE,
        PRINTABLE.map(lambda text: f"Bearer {text}"),
        st.from_regex(KEY_FORMAT, fullmatch=True).map(lambda key: f"Bearer {key}"),
        st.sampled_from((dev_key, f"Basic {dev_key}", f"Bearer {dev_key}x", f"Bearer {dev_key[:-1]}")),
    )


@functools.cache
def guessed_keys(dev_key: str) -> st.SearchStrategy[str]:
    """The dev key's id with another secret: the API runs scrypt (tens of milliseconds of CPU) on each."""
    parsed = parse_key(dev_key)
    assert parsed is not None
    key_id, secret = parsed
    return SECRET.filter(lambda other: other != secret).map(lambda other: f"Bearer {KEY_PREFIX}{key_id}_{other}")


# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    async with Stack(fake_stack(first_token_ms=1.0, token_ms=1.0)) as started:
        yield started


@pytest.fixture(scope="module")
async def keyed(stack: Stack) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    """Per route, a channel whose calls carry the dev key."""
    channels = {"envoy": stack.channel(), "api": stack.channel(stack.api_target)}
    yield channels
    for channel in channels.values():
        await channel.close()


@pytest.fixture(scope="module")
async def bare(stack: Stack) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    """Per route, a channel without a key: each call brings its own authorization header, if any."""
    channels = {"envoy": make_channel(stack.envoy_target), "api": make_channel(stack.api_target)}
    yield channels
    for channel in channels.values():
        await channel.close()


async def send(
    channel: grpc.aio.Channel, method: MethodDescriptor, payload: bytes, authorization: str | None = None
) -> tuple[grpc.StatusCode, str]:
    metadata = None if authorization is None else (("authorization", authorization),)
    path = method_path(method)
    return await raw_answer(channel, path, payload, method.server_streaming, metadata, CALL_TIMEOUT_S)


FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@settings(FUZZ, max_examples=BATCHES)
@given(data=st.data())
async def test_every_public_rpc_answers_precisely_and_only_to_the_key(
    stack: Stack, keyed: dict[str, grpc.aio.Channel], bare: dict[str, grpc.aio.Channel], data: st.DataObject
) -> None:
    """One batch: calls with the key, calls without a valid one and at most one guessed secret, all at once (the
    cheap refusals fill the time the generations take)."""
    generations = st.lists(st.tuples(ROUTE, GENERATION_CALLS), min_size=GENERATIONS, max_size=GENERATIONS)
    others = st.lists(st.tuples(ROUTE, OTHER_CALLS), min_size=WITH_KEY - GENERATIONS, max_size=WITH_KEY - GENERATIONS)
    with_key = data.draw(generations) + data.draw(others)
    wrong = st.tuples(ROUTE, wrong_authorizations(stack.api_key), CALLS)
    guessed = st.tuples(ROUTE, guessed_keys(stack.api_key), CALLS)
    without_key = data.draw(st.lists(wrong, min_size=WITHOUT_KEY, max_size=WITHOUT_KEY))
    without_key += data.draw(st.lists(guessed, max_size=1))
    answers = await asyncio.gather(
        *(send(keyed[route], method, payload) for route, (method, payload) in with_key),
        *(send(bare[route], method, payload, authorization) for route, authorization, (method, payload) in without_key),
    )
    for (route, (method, payload)), (code, details) in zip(with_key, answers[: len(with_key)], strict=True):
        SENT[f"{route} {CREDENTIALS[0]}"] += 1
        ANSWERS[f"{method.name} {code.name}"] += 1
        assert code not in IMPRECISE, (route, method_path(method), payload, code, details)
    for (route, authorization, (method, _)), answer in zip(without_key, answers[len(with_key) :], strict=True):
        SENT[f"{route} {CREDENTIALS[1]}"] += 1
        assert answer[0] == grpc.StatusCode.UNAUTHENTICATED, (route, authorization, method_path(method), answer)


async def test_the_fuzz_sent_enough_and_the_servers_stay_serving(stack: Stack) -> None:
    """Runs after the fuzz (pytest keeps a module's order): it checks what was sent."""
    print(f"sent: {dict(SENT)}; answers with the key: {dict(ANSWERS)}")
    assert sum(SENT.values()) >= MIN_REQUESTS, f"run the whole module: {dict(SENT)}"
    assert len(SENT) == len(ROUTES) * len(CREDENTIALS), dict(SENT)
    for target in (stack.api_target, stack.envoy_target):
        for service in ("", READINESS_SERVICE):
            assert await health_status(target, service) == SERVING, (target, service)
    envoy = EnvoyProcess(stack.ports.envoy, stack.ports.envoy_admin, stack.home / "envoy.yaml", stack.child("envoy"))
    assert envoy.admin("/ready").strip() == "LIVE"
    assert envoy.upstream_healthy()
    async with stack.channel() as channel:
        sampling = types_pb2.SamplingParams(max_tokens=MAX_TOKENS)
        request = orchestrator_pb2.GenerateRequest(prompt="Say hi.", sampling=sampling)
        reply = await orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Generate(request, timeout=30)
    assert reply.text
