"""Model selection, as a pure function of the registry's live view, so every rule is unit-testable.

Order (seed §7): the user's model if healthy; the default; the highest priority; the first available.
A model at capacity is skipped (seed §8); when every healthy model is full, the request queues on the best one.
Capacity comes from facts that cannot drift: in-flight counts the replicas heartbeat (expired after a short TTL by
the registry), and a queue backlog only while the queue moves and its age or growth shows that tasks really wait.
"""

from dataclasses import dataclass

from llmorch_common.errors import PlatformError, not_found, unavailable
from orchestrator_svc.inference.contracts import ModelChoice

# A backlog whose oldest task has waited this long is real queueing, whatever the counters say. Shorter waits are
# the normal hand-off between a task's add and its dispatch, which in-flight counts already cover.
WAITING_AGE_S = 1.0


@dataclass(frozen=True)
class Candidate:
    model_id: str
    task_queue: str
    priority: int  # 0 means "no priority": such models are only reached by rule 4, in registration order
    default_flag: bool
    healthy: bool
    in_flight: int
    capacity: int  # max_concurrency x serving replicas
    backlog: int  # Temporal's approximate count of tasks waiting on the model's queue
    context_limit: int
    registration_order: int
    backlog_age_s: float = 0.0  # age of the oldest waiting task, as Temporal reports it
    backlog_add_rate: float = 0.0  # tasks added to the queue per second, recently
    backlog_dispatch_rate: float = 0.0  # tasks dispatched from it per second, recently
    model_digest: str = ""  # the weights' identity, for the completion cache's key

    @property
    def waiting(self) -> bool:
        """Tasks really wait on the queue: it is moving (workers take tasks from it) and still behind (its oldest
        task has waited, or more arrive than leave).

        The counters alone mislead. After a generation was killed and its request fell back, Temporal went on
        counting the abandoned retry on the default model's queue (seen: count 1 with age 0; count 2, age 5 s and
        growing, with the model back and idle), and read as "full" that starved the default. Such tasks are never
        dispatched, so a queue with nothing dispatched is not a wait: if no worker polls it, health and the
        saturation bound of the generation deal with it."""
        if self.backlog <= 0 or self.backlog_age_s <= 0 or self.backlog_dispatch_rate <= 0:
            return False
        return self.backlog_age_s >= WAITING_AGE_S or self.backlog_add_rate > self.backlog_dispatch_rate

    @property
    def full(self) -> bool:
        """At capacity by the replicas' own counts; or behind on a queue that the replicas confirm is busy. An idle
        model (no fresh in-flight) cannot have tasks really waiting, since its pollers would take them at once."""
        return self.in_flight >= self.capacity or (self.in_flight > 0 and self.waiting)


def select(candidates: list[Candidate], requested: str, excluded: frozenset[str]) -> ModelChoice:
    """Raise NOT_FOUND for an unknown requested model and UNAVAILABLE when nothing can serve."""
    by_id = {c.model_id: c for c in candidates}
    notes: list[str] = []
    if requested:
        wanted = by_id.get(requested)
        if wanted is None:
            raise not_found(f"model {requested!r} is not registered")
        if wanted.model_id in excluded:
            notes.append(f"user-specified {requested} already failed")
        elif wanted.healthy:
            # Users who name a model mean it: at capacity it queues there (backpressure) instead of switching.
            return _choice(wanted, "user-specified", queued=wanted.full)
        else:
            notes.append(f"user-specified {requested} unhealthy")
    usable = sorted(
        (c for c in candidates if c.healthy and c.model_id not in excluded), key=lambda c: c.registration_order
    )
    if not usable:
        raise no_model_error(candidates, excluded)
    prefix = "; ".join(notes) + "; " if notes else ""
    for rule, pick in _RULES:
        chosen = pick([c for c in usable if not c.full])
        if chosen:
            return _choice(chosen, prefix + rule)
    # Every healthy model is full: wait durably on the best one rather than fail.
    for rule, pick in _RULES:
        chosen = pick(usable)
        if chosen:
            return _choice(chosen, prefix + rule + " (all models at capacity; queued)", queued=True)
    raise no_model_error(candidates, excluded)  # unreachable: rule 4 always picks from a non-empty list


def _default(models: list[Candidate]) -> Candidate | None:
    return next((c for c in models if c.default_flag), None)


def _highest_priority(models: list[Candidate]) -> Candidate | None:
    ranked = [c for c in models if c.priority != 0]
    return max(ranked, key=lambda c: (c.priority, -c.registration_order)) if ranked else None


def _first_available(models: list[Candidate]) -> Candidate | None:
    return models[0] if models else None


_RULES = (("default", _default), ("priority", _highest_priority), ("first-available", _first_available))


def _choice(candidate: Candidate, reason: str, queued: bool = False) -> ModelChoice:
    return ModelChoice(
        model_id=candidate.model_id,
        task_queue=candidate.task_queue,
        reason=reason,
        context_limit=candidate.context_limit,
        queued=queued,
        model_digest=candidate.model_digest,
    )


def no_model_error(candidates: list[Candidate], excluded: frozenset[str]) -> PlatformError:
    """UNAVAILABLE, listing every model and why it could not serve, so the client sees what was tried."""
    reasons = []
    for c in sorted(candidates, key=lambda c: c.registration_order):
        why = "failed earlier in this request" if c.model_id in excluded else "unhealthy"
        reasons.append(f"{c.model_id}: {why}")
    detail = ", ".join(reasons) if reasons else "no models registered"
    return unavailable(f"no model can serve this request ({detail})")
