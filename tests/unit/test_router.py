"""The selection rules, one by one, as the seed orders them."""

from dataclasses import replace

import pytest

from llmorch_common.errors import PlatformError
from orchestrator_svc.inference.router import Candidate, select


def model(model_id: str, order: int, **overrides: object) -> Candidate:
    values: dict[str, object] = {
        "model_id": model_id,
        "task_queue": f"llm.{model_id}",
        "priority": 0,
        "default_flag": False,
        "healthy": True,
        "in_flight": 0,
        "capacity": 1,
        "backlog": 0,
        "context_limit": 2048,
        "registration_order": order,
    }
    values.update(overrides)
    return Candidate(**values)  # type: ignore[arg-type]


NONE: frozenset[str] = frozenset()


def test_user_specified_healthy_model_wins_over_default() -> None:
    models = [model("a", 1, default_flag=True), model("b", 2)]
    choice = select(models, "b", NONE)
    assert (choice.model_id, choice.reason) == ("b", "user-specified")


def test_user_specified_unhealthy_model_falls_to_default() -> None:
    models = [model("a", 1, default_flag=True), model("b", 2, healthy=False)]
    choice = select(models, "b", NONE)
    assert choice.model_id == "a"
    assert choice.reason == "user-specified b unhealthy; default"


def test_user_specified_model_at_capacity_queues_there() -> None:
    models = [model("a", 1, default_flag=True), model("b", 2, in_flight=1)]
    choice = select(models, "b", NONE)
    assert (choice.model_id, choice.queued) == ("b", True)


def test_default_model_when_nothing_requested() -> None:
    models = [model("a", 1, priority=10), model("b", 2, default_flag=True)]
    assert select(models, "", NONE).model_id == "b"


def test_highest_priority_when_default_is_unavailable() -> None:
    models = [model("a", 1, default_flag=True, healthy=False), model("b", 2, priority=5), model("c", 3, priority=9)]
    choice = select(models, "", NONE)
    assert (choice.model_id, choice.reason) == ("c", "priority")


def test_first_available_when_no_priorities_are_set() -> None:
    models = [model("a", 1, healthy=False), model("b", 2), model("c", 3)]
    choice = select(models, "", NONE)
    assert (choice.model_id, choice.reason) == ("b", "first-available")


def test_model_at_capacity_is_skipped_for_the_next() -> None:
    models = [model("a", 1, default_flag=True, in_flight=1), model("b", 2, priority=5)]
    assert select(models, "", NONE).model_id == "b"


def test_backlog_counts_as_full() -> None:
    busy = {"backlog": 3, "backlog_age_s": 1.5, "backlog_add_rate": 2.0, "backlog_dispatch_rate": 2.0}
    models = [model("a", 1, default_flag=True, in_flight=1, capacity=2, **busy), model("b", 2, priority=5)]
    assert select(models, "", NONE).model_id == "b"


def test_all_full_queues_on_best_model() -> None:
    models = [model("a", 1, default_flag=True, in_flight=1), model("b", 2, priority=5, in_flight=1)]
    choice = select(models, "", NONE)
    assert (choice.model_id, choice.queued) == ("a", True)
    assert "queued" in choice.reason


def test_excluded_models_are_not_chosen_again() -> None:
    models = [model("a", 1, default_flag=True), model("b", 2, priority=5)]
    choice = select(models, "a", frozenset({"a"}))
    assert choice.model_id == "b"
    assert choice.reason.startswith("user-specified a already failed")


def test_unknown_requested_model_is_not_found() -> None:
    with pytest.raises(PlatformError) as error:
        select([model("a", 1)], "zzz", NONE)
    assert error.value.code == "NOT_FOUND"


def test_nothing_healthy_is_unavailable_and_lists_why() -> None:
    models = [model("a", 1, healthy=False), model("b", 2)]
    with pytest.raises(PlatformError) as error:
        select(models, "", frozenset({"b"}))
    assert error.value.code == "UNAVAILABLE"
    assert "a: unhealthy" in error.value.message
    assert "b: failed earlier in this request" in error.value.message


def test_no_models_registered_is_unavailable() -> None:
    with pytest.raises(PlatformError) as error:
        select([], "", NONE)
    assert error.value.code == "UNAVAILABLE"


def test_phantom_backlog_does_not_starve_the_default() -> None:
    """The count Temporal kept after a killed generation: 1 task, age 0, nothing arriving. Not a wait."""
    models = [model("a", 1, default_flag=True, backlog=1, backlog_age_s=0.0), model("b", 2, priority=5)]
    choice = select(models, "", NONE)
    assert (choice.model_id, choice.reason, choice.queued) == ("a", "default", False)


def test_stale_count_with_old_rates_is_not_a_wait() -> None:
    # A drifted count whose last add is long dispatched: rates even, the oldest "task" has no age.
    stale = model("a", 1, default_flag=True, backlog=3, backlog_add_rate=0.5, backlog_dispatch_rate=0.5)
    assert not stale.full
    assert select([stale, model("b", 2, priority=5)], "", NONE).model_id == "a"


def test_abandoned_retries_that_age_on_an_idle_queue_are_not_a_wait() -> None:
    """What Temporal reported in the chaos test once the killed default was back and idle: two abandoned retries,
    5 s old and aging, adds still in the rate window, nothing dispatched."""
    stale = {"backlog": 2, "backlog_age_s": 5.25, "backlog_add_rate": 0.64, "backlog_dispatch_rate": 0.0}
    models = [model("a", 1, default_flag=True, **stale), model("b", 2, priority=5)]
    assert (select(models, "", NONE).model_id, models[0].full) == ("a", False)


def test_abandoned_retry_with_recent_dispatches_on_an_idle_model_is_not_a_wait() -> None:
    """The next run of the chaos test: one abandoned retry, 2.2 s old, rates still carrying the killed attempt.
    The rates look like a wait; the replicas, idle, say it cannot be one."""
    stale = {"backlog": 1, "backlog_age_s": 2.24, "backlog_add_rate": 0.38, "backlog_dispatch_rate": 0.19}
    idle = model("a", 1, default_flag=True, capacity=2, **stale)
    assert idle.waiting and not idle.full
    assert select([idle, model("b", 2, priority=5)], "", NONE).model_id == "a"


def test_backlog_that_has_waited_counts_as_full() -> None:
    busy = {"backlog": 3, "backlog_age_s": 2.5, "backlog_dispatch_rate": 1.5}
    models = [model("a", 1, default_flag=True, in_flight=1, capacity=2, **busy), model("b", 2, priority=5)]
    choice = select(models, "", NONE)
    assert (choice.model_id, choice.reason) == ("b", "priority")


def test_young_backlog_that_grows_counts_as_full() -> None:
    growing = model(
        "a", 1, capacity=4, in_flight=1, backlog=4, backlog_age_s=0.2, backlog_add_rate=9, backlog_dispatch_rate=2
    )
    draining = replace(growing, backlog_add_rate=2, backlog_dispatch_rate=9)
    assert growing.full
    assert not draining.full  # a short wait that is shrinking is the normal hand-off


def test_in_flight_at_capacity_is_full_without_any_backlog() -> None:
    assert model("a", 1, in_flight=2, capacity=2).full
    assert not model("a", 1, in_flight=1, capacity=2).full
