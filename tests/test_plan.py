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


def test_describe_plan_says_what_a_dry_run_would_do() -> None:
    from adora.engine.plan import describe_plan

    wanted = [XPFacts("a", None), XPFacts("b", S.FAILED), XPFacts("c", S.RUNNING),
              XPFacts("d", S.COMPLETED)]
    the_plan = plan(wanted, [XPFacts("r", S.RUNNING), XPFacts("s", S.COMPLETED)],
                    rules=SubmitRules(retry=True))
    lines = describe_plan(the_plan, [(f.sig, f"x={f.sig}", f.state) for f in wanted])
    assert lines == [
        "Would submit 1 XP(s), new: x=a (a)",
        "Would submit 1 XP(s), retry FAILED (-r): x=b (b)",
        "Would cancel 1 job(s) of XPs removed from the grid (after confirmation, or --yes): "
        "r",
        "Would drop 1 finished XP(s) removed from the grid from its listing: s",
        "Would keep 2 XP(s) with their job: 1 COMPLETED, 1 RUNNING",
    ]
    nothing = plan([XPFacts("d", S.COMPLETED)], [])
    assert describe_plan(nothing, [("d", "x", S.COMPLETED)]) == [
        "Would keep 1 XP(s) with their job: 1 COMPLETED"]
    many = plan([XPFacts(str(i), None) for i in range(12)], [])
    line = describe_plan(many, [(str(i), f"n{i}", None) for i in range(12)], limit=3)[0]
    assert line == "Would submit 12 XP(s), new: n0 (0), n1 (1), n2 (2), and 9 more"
