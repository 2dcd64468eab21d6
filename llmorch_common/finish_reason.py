"""Why a generation stopped: the engines' words, kept in workflow results, and the wire enum, mapped in one place."""

from llmorch.v1 import types_pb2

from llmorch_common.contracts import CANCELLED, LENGTH, STOP

_TO_PROTO: dict[str, types_pb2.FinishReason.ValueType] = {
    STOP: types_pb2.FINISH_REASON_STOP,
    LENGTH: types_pb2.FINISH_REASON_LENGTH,
    CANCELLED: types_pb2.FINISH_REASON_CANCELLED,
}
_FROM_PROTO = {value: word for word, value in _TO_PROTO.items()}


def finish_reason_to_proto(reason: str) -> types_pb2.FinishReason.ValueType:
    """An engine's unknown word becomes UNSPECIFIED, as the proto documents, rather than failing a finished answer."""
    return _TO_PROTO.get(reason, types_pb2.FINISH_REASON_UNSPECIFIED)


def finish_reason_from_proto(reason: types_pb2.FinishReason.ValueType) -> str:
    """The word the workflow records; "" for UNSPECIFIED, which maps back to UNSPECIFIED."""
    return _FROM_PROTO.get(reason, "")
