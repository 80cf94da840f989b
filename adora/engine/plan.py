"""Planning: what a grid run must do, as a pure function of what is wanted and what is.

No I/O here. The engine gathers the facts (the XPs the grid asks for, the
state of their current jobs, the grid's former members), `plan` decides, and
the engine acts. The rules are Dora's:

============================  ======================================  ==============
current job of a wanted XP    default                                 with
============================  ======================================  ==============
none                          submit
COMPLETED                     keep                                    ``-D`` submit
FAILED, CANCELLED, TIMEOUT,   keep                                    ``-r`` submit
OUT_OF_MEMORY, NODE_FAIL...
PENDING, RUNNING, UNKNOWN...  keep                                    ``-R`` cancel + submit
============================  ======================================  ==============

``-C`` submits nothing and cancels every wanted XP whose job is not done.
A former member of the grid (removed from the grid file) whose job is not
done is cancelled, unless another grid still lists it (then it is only
dropped from this grid's members); cancelling removed XPs needs confirmation.
"""

from __future__ import annotations

import typing as tp
from dataclasses import dataclass, field

from ..conf import SubmitRules
from ..states import JobState

__all__ = ["Plan", "XPFacts", "plan"]


@dataclass(frozen=True)
class XPFacts:
    """What the engine knows of one XP before planning."""

    sig: str
    #: State of the current job; None when the XP has no job.
    state: JobState | None


@dataclass
class Plan:
    """What to do. Lists hold signatures, in grid order."""

    submit: list[str] = field(default_factory=list)
    #: Jobs of wanted XPs to cancel (``-R`` replacements and ``-C``).
    cancel: list[str] = field(default_factory=list)
    #: Jobs of XPs removed from the grid to cancel: only after confirmation.
    cancel_removed: list[str] = field(default_factory=list)
    #: Former members to drop from the grid's membership without cancelling.
    unlink: list[str] = field(default_factory=list)
    #: Removed XPs still claimed by another grid (kept running, unlinked here).
    claimed_elsewhere: list[str] = field(default_factory=list)
    #: Why each submitted or cancelled XP is in the plan.
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.submit or self.cancel or self.cancel_removed or self.unlink)


def _decide(state: JobState | None, rules: SubmitRules) -> tuple[bool, bool, str]:
    # -> (submit, cancel_first, reason)
    if state is None:
        return True, False, "new"
    if state is JobState.COMPLETED:
        return rules.replace_done, False, "replace done (-D)"
    if state.is_failed:
        return rules.retry, False, f"retry {state.value} (-r)"
    return rules.replace, rules.replace, f"replace {state.value} (-R)"


def plan(wanted: tp.Sequence[XPFacts], removed: tp.Sequence[XPFacts] = (), *,
         rules: SubmitRules | None = None, cancel: bool = False,
         claimed_elsewhere: tp.Collection[str] = ()) -> Plan:
    """Decide what to submit, cancel and unlink.

    ``wanted``: the XPs the grid asks for (already filtered by patterns).
    ``removed``: members of the grid that it no longer asks for.
    ``claimed_elsewhere``: signatures listed by another grid.
    """
    rules = rules or SubmitRules()
    out = Plan()
    for facts in wanted:
        done = facts.state is None or facts.state.is_final
        if cancel:
            if not done:
                out.cancel.append(facts.sig)
                out.reasons[facts.sig] = "cancel (-C)"
            continue
        submit, cancel_first, reason = _decide(facts.state, rules)
        if submit:
            out.submit.append(facts.sig)
            out.reasons[facts.sig] = reason
            if cancel_first:
                out.cancel.append(facts.sig)
    for facts in removed:
        done = facts.state is None or facts.state.is_final
        if facts.sig in claimed_elsewhere:
            out.claimed_elsewhere.append(facts.sig)
            out.unlink.append(facts.sig)
        elif done:
            out.unlink.append(facts.sig)
        else:
            out.cancel_removed.append(facts.sig)
            out.reasons[facts.sig] = "removed from the grid"
    return out


def describe_plan(plan: Plan, wanted: tp.Sequence[tuple[str, str, JobState | None]], *,
                  limit: int = 8) -> list[str]:
    """What a dry run would do, in words, one line per kind of action. Pure.

    ``wanted``: ``(sig, name, state)`` of the selected XPs, in grid order (state None:
    no job). Kept XPs (neither submitted nor cancelled) are counted by state.
    """
    names = {sig: name for sig, name, _ in wanted}

    def listing(sigs: tp.Sequence[str]) -> str:
        shown = ", ".join(f"{names[sig]} ({sig})" if names.get(sig) else sig
                          for sig in sigs[:limit])
        return shown + (f", and {len(sigs) - limit} more" if len(sigs) > limit else "")

    lines = []
    by_reason: dict[str, list[str]] = {}
    for sig in plan.submit:
        by_reason.setdefault(plan.reasons.get(sig, "submit"), []).append(sig)
    for reason, sigs in by_reason.items():
        lines.append(f"Would submit {len(sigs)} XP(s), {reason}: {listing(sigs)}")
    replaced = set(plan.submit)
    cancels = [sig for sig in plan.cancel if sig not in replaced]
    if cancels:
        lines.append(f"Would cancel {len(cancels)} job(s) (-C): {listing(cancels)}")
    if plan.cancel_removed:
        lines.append(f"Would cancel {len(plan.cancel_removed)} job(s) of XPs removed from the "
                     f"grid (after confirmation, or --yes): {listing(plan.cancel_removed)}")
    dropped = [sig for sig in plan.unlink if sig not in plan.claimed_elsewhere]
    if dropped:
        lines.append(f"Would drop {len(dropped)} finished XP(s) removed from the grid from its "
                     f"listing: {listing(dropped)}")
    if plan.claimed_elsewhere:
        lines.append(f"Would leave {len(plan.claimed_elsewhere)} removed XP(s) running: another "
                     f"grid lists them: {listing(plan.claimed_elsewhere)}")
    acted = replaced | set(plan.cancel)
    kept: dict[str, int] = {}
    for sig, _, state in wanted:
        if sig not in acted and state is not None:
            kept[state.value] = kept.get(state.value, 0) + 1
    if kept:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(kept.items()))
        hint = ""
        if any(JobState(s).is_failed for s in kept):
            hint = " (-r resubmits the failed ones)"
        lines.append(f"Would keep {sum(kept.values())} XP(s) with their job: {counts}{hint}")
    return lines or ["Nothing to do: every selected XP has its job."]
