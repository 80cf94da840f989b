"""Planning is pure: (wanted XPs and their job states, removed XPs, rules) -> actions."""

from __future__ import annotations

import pytest

from adora.conf import SubmitRules
from adora.engine.plan import XPFacts, plan
from adora.states import JobState as S

NONE = None
RULES = {
    "default": SubmitRules(),
    "retry": SubmitRules(retry=True),
    "replace": SubmitRules(replace=True),
    "replace_done": SubmitRules(replace_done=True),
}

# (state of the current job, rules) -> (submitted?, cancelled first?)
CASES = [
    (NONE, "default", True, False),
    (NONE, "retry", True, False),
    (S.COMPLETED, "default", False, False),
    (S.COMPLETED, "retry", False, False),
    (S.COMPLETED, "replace", False, False),
    (S.COMPLETED, "replace_done", True, False),
    (S.FAILED, "default", False, False),
    (S.FAILED, "retry", True, False),
    (S.FAILED, "replace", False, False),
    (S.CANCELLED, "retry", True, False),
    (S.TIMEOUT, "retry", True, False),
    (S.OUT_OF_MEMORY, "retry", True, False),
    (S.NODE_FAIL, "retry", True, False),
    (S.MISSING, "retry", True, False),
    (S.PENDING, "default", False, False),
    (S.PENDING, "retry", False, False),
    (S.PENDING, "replace", True, True),
    (S.RUNNING, "default", False, False),
    (S.RUNNING, "replace", True, True),
    (S.RUNNING, "replace_done", False, False),
    (S.REQUEUED, "replace", True, True),
    # An unknown (stale) state is never a reason to resubmit by itself.
    (S.UNKNOWN, "default", False, False),
    (S.UNKNOWN, "retry", False, False),
    (S.UNKNOWN, "replace_done", False, False),
]


@pytest.mark.parametrize(("state", "rules", "submit", "cancel"), CASES)
def test_rules(state: S | None, rules: str, submit: bool, cancel: bool) -> None:
    p = plan([XPFacts("a", state)], rules=RULES[rules])
    assert (p.submit == ["a"]) is submit
    assert (p.cancel == ["a"]) is cancel
    assert not p.cancel_removed and not p.unlink


@pytest.mark.parametrize("state", [S.PENDING, S.RUNNING, S.UNKNOWN, S.REQUEUED])
def test_cancel_flag_cancels_unfinished_and_submits_nothing(state: S) -> None:
    wanted = [XPFacts("a", state), XPFacts("b", None), XPFacts("c", S.COMPLETED),
              XPFacts("d", S.FAILED)]
    p = plan(wanted, rules=SubmitRules(retry=True, replace_done=True), cancel=True)
    assert p.submit == []
    assert p.cancel == ["a"]


def test_removed_xps() -> None:
    removed = [XPFacts("run", S.RUNNING), XPFacts("done", S.COMPLETED),
               XPFacts("nojob", None), XPFacts("shared", S.RUNNING),
               XPFacts("failed", S.FAILED), XPFacts("stale", S.UNKNOWN)]
    p = plan([], removed, claimed_elsewhere={"shared"})
    # Only running/pending/unknown XPs that no other grid claims get cancelled.
    assert p.cancel_removed == ["run", "stale"]
    assert sorted(p.unlink) == ["done", "failed", "nojob", "shared"]
    assert p.claimed_elsewhere == ["shared"]
    assert p.reasons["run"] == "removed from the grid"


def test_order_is_grid_order() -> None:
    wanted = [XPFacts(sig, None) for sig in "dcba"]
    assert plan(wanted).submit == list("dcba")


def test_empty_plan() -> None:
    assert plan([XPFacts("a", S.COMPLETED)]).empty
    assert not plan([XPFacts("a", None)]).empty
