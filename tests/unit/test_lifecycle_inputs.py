"""Bad lifecycle inputs get a precise status: unknown policy values and malformed request ids name their field."""

from typing import Any

import pytest
from llmorch.v1 import orchestrator_pb2, types_pb2

from llmorch_common.errors import PlatformError
from orchestrator_svc.identity.keys import Principal, Role
from orchestrator_svc.inference.contracts import CONTINUE, RESTART
from orchestrator_svc.inference.servicer import check_request_id, request_digest, request_from_proto


def generate_request(**fields: Any) -> orchestrator_pb2.GenerateRequest:
    return orchestrator_pb2.GenerateRequest(prompt="hello", sampling=types_pb2.SamplingParams(max_tokens=4), **fields)


CALLER = Principal("key", "t", Role.TENANT)


@pytest.mark.parametrize("field", ["fallback", "on_disconnect"])
def test_an_unknown_policy_value_is_invalid_argument_on_its_field(field: str) -> None:
    with pytest.raises(PlatformError) as error:
        request_from_proto(generate_request(**{field: 99}), CALLER)
    assert error.value.code == "INVALID_ARGUMENT"
    assert [v.field for v in error.value.violations] == [field]


def test_policies_map_to_the_domain_and_a_disconnect_policy_is_not_part_of_the_request() -> None:
    default = request_from_proto(generate_request(), CALLER)
    assert (default.on_fallback, default.cancel_on_disconnect) == (CONTINUE, False)
    restart = request_from_proto(
        generate_request(
            fallback=orchestrator_pb2.FALLBACK_POLICY_RESTART, on_disconnect=orchestrator_pb2.DISCONNECT_POLICY_CANCEL
        ),
        CALLER,
    )
    assert (restart.on_fallback, restart.cancel_on_disconnect) == (RESTART, True)
    cancel = generate_request(on_disconnect=orchestrator_pb2.DISCONNECT_POLICY_CANCEL)
    assert request_digest(cancel) == request_digest(generate_request()), "reattaching may choose another policy"
    assert request_digest(generate_request(fallback=orchestrator_pb2.FALLBACK_POLICY_RESTART)) != request_digest(
        generate_request()
    )


@pytest.mark.parametrize("request_id", ["", "has space", "x" * 129])
def test_cancel_needs_a_well_formed_request_id(request_id: str) -> None:
    with pytest.raises(PlatformError) as error:
        check_request_id(request_id)
    assert error.value.code == "INVALID_ARGUMENT"
    assert [v.field for v in error.value.violations] == ["request_id"]
