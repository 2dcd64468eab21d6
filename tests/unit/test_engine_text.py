"""The engine's streaming text rules: whole characters only, and nothing that may turn out to be a stop string."""

from model_svc.engine import _complete_text, _ends_with_prefix


def test_incomplete_characters_wait_for_their_last_byte() -> None:
    euro = "€".encode()
    assert _complete_text(euro[:2]) is None
    assert _complete_text(euro) == "€"
    assert _complete_text(b"ok") == "ok"
    assert _complete_text(b"\xff ok") == "\ufffd ok", "invalid bytes are replaced, not held forever"


def test_a_possible_stop_string_is_held_back() -> None:
    assert _ends_with_prefix("answer <|im", "<|im_end|>")
    assert not _ends_with_prefix("answer", "<|im_end|>")
    assert not _ends_with_prefix("answer <|im_end|>", "<|im_end|>"), "a whole stop string is cut, not held"
