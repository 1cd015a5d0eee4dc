"""kvstore.client's decisions without a node: where a resumed watch restarts, and which lost
answers are retried and which become OutcomeUnknown."""

from __future__ import annotations

from kvstore.client import OutcomeUnknown, Retry
from kvstore.client import protocol as wire
from kvstore.client.core import Attempts, Core, WatchPosition
from kvstore.client.models import Event
from kvstore.client.protocol import Answer


def _event(key: str, lsn: str) -> Event:
    return Event("set", key, b"v", 1, None, lsn)


def test_a_watch_cut_inside_a_transaction_resumes_without_gaps_or_repeats() -> None:
    position = WatchPosition("0/10")
    assert all(position.accept(_event(key, lsn)) for key, lsn in (("a", "0/20"), ("b", "0/30"), ("c", "0/30")))
    # Cut after two of the three changes at 0/30: resume after 0/20, skip what was given.
    assert position.resume_from() == "0/20"
    replayed = [_event("b", "0/30"), _event("c", "0/30"), _event("d", "0/30"), _event("e", "0/40")]
    assert [event.key for event in replayed if position.accept(event)] == ["d", "e"]
    position.progress("0/50")
    assert position.resume_from() == "0/50"
    assert position.accept(_event("f", "0/60"))


def _core() -> Core:
    return Core(["http://a"], token="t", username=None, password=None, read_from="primary", retry=Retry(attempts=3))


def test_a_lost_answer_to_a_write_without_an_idempotency_key_is_outcome_unknown() -> None:
    core = _core()
    plain_put = wire.put("k", b"v", None, None, False)
    assert plain_put.retry_safe and wire.IDEMPOTENCY_HEADER not in plain_put.headers
    unsafe = wire.put("k", b"v", None, None, False)
    unsafe.retry_safe = False
    step = core.after_failure(Attempts(unsafe, count=1), "http://a", "connection reset", sent=True)
    assert isinstance(step.error, OutcomeUnknown)
    # Refused before anything was sent: retried, whatever the call.
    assert core.after_failure(Attempts(unsafe, count=1), "http://a", "refused", sent=False).error is None


def test_incr_and_conditional_writes_carry_an_idempotency_key_and_are_retried() -> None:
    core = _core()
    for call in (wire.incr("k", 1), wire.txn([]), wire.delete("k", None), wire.put("k", b"v", None, 3, False)):
        assert len(call.headers[wire.IDEMPOTENCY_HEADER]) == 32
        step = core.after_failure(Attempts(call, count=1), "http://a", "connection reset", sent=True)
        assert step.error is None and step.rediscover
    # Out of attempts after a lost answer: the caller learns the outcome is unknown.
    last = Attempts(wire.incr("k", 1), count=3)
    assert isinstance(core.after_failure(last, "http://a", "connection reset", sent=True).error, OutcomeUnknown)


def test_a_504_on_a_write_is_never_reported_as_a_plain_failure() -> None:
    core = _core()
    answer = Answer(504, {}, b'{"error": {"code": "timeout", "message": "replicas did not confirm"}}', "http://a")
    attempts = Attempts(wire.incr("k", 1), count=3)
    error = core.after_answer(attempts, answer).error
    assert isinstance(error, OutcomeUnknown) and error.code == "timeout"


def test_a_client_that_never_retries_sends_no_idempotency_key() -> None:
    """kvctl sends each write once: the node need not remember its answer (nor log it)."""
    once = Core(["http://a"], token="t", username=None, password=None, read_from="primary", retry=Retry(attempts=1))
    assert wire.IDEMPOTENCY_HEADER not in once.headers(wire.incr("k", 1))
    assert wire.IDEMPOTENCY_HEADER in _core().headers(wire.incr("k", 1))
