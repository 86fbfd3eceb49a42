"""The planner (DESIGN §4): a pure function of (graph, step statuses)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest

from floworchestrator._status import FINAL_STEP_STATUSES, RunStatus, StepStatus
from floworchestrator.planner import Decision, Graph, accepts, advance, classify

P = StepStatus.PENDING
R = StepStatus.RUNNING
S = StepStatus.SUCCEEDED
F = StepStatus.FAILED
K = StepStatus.SKIPPED
C = StepStatus.CANCELLED
T = StepStatus.TIMED_OUT
NON_FINAL = (P, R)

Spec = Mapping[str, Mapping[str, Iterable[StepStatus]]]


def graph(spec: Spec) -> Graph:
    """``{"b": {"a": [S]}}``: b runs after a when a Succeeded; every step must be a key."""
    return Graph.build({k: {p: frozenset(v) for p, v in ps.items()} for k, ps in spec.items()})


def states(spec: Spec, **given: StepStatus) -> dict[str, StepStatus]:
    """Every step Pending except those given."""
    out = {k: P for k in spec}
    out.update(given)
    return out


# --- graphs used below -----------------------------------------------------------

LINEAR: Spec = {"a": {}, "b": {"a": [S]}, "c": {"b": [S]}}
DIAMOND: Spec = {"a": {}, "b": {"a": [S]}, "c": {"a": [S]}, "d": {"b": [S], "c": [S]}}
# the DESIGN's example: alert runs only when charge fails
ORDERS: Spec = {
    "fetch": {},
    "charge": {"fetch": [S]},
    "ship": {"charge": [S]},
    "alert": {"charge": [F]},
}
# "finally": runs after a whatever its outcome
BOTH: Spec = {"a": {}, "b": {"a": [S, F]}, "c": {"b": [S]}}
ON_SKIP: Spec = {"a": {}, "b": {"a": [S]}, "c": {"b": [K]}, "d": {"c": [S]}}
ANY: Spec = {"a": {}, "b": {"a": []}}
LONG: Spec = {"s0": {}, **{f"s{i}": {f"s{i - 1}": [S]} for i in range(1, 12)}}
MULTI_ENTRY: Spec = {"x": {}, "y": {}, "z": {}, "j": {"x": [S], "y": [S]}, "k": {"z": [S]}}
# fan-in where the joined step accepts a failure of one branch
FAN_IN_HANDLED: Spec = {"a": {}, "b": {"a": [S]}, "c": {"a": [S]}, "d": {"b": [S], "c": [S, F]}}
# skipped branches meeting again further down
SKIP_MERGE: Spec = {
    "a": {},
    "b": {"a": [S]},
    "c": {"a": [S]},
    "b2": {"b": [S]},
    "c2": {"c": [S]},
    "c3": {"c2": [S]},
    "j": {"b2": [S], "c3": [S]},
    "after": {"j": [S]},
}


# --- advance: table -----------------------------------------------------------------

ADVANCE_CASES: list[tuple[str, Spec, dict[str, StepStatus], tuple[str, ...], tuple[str, ...], RunStatus | None]] = [
    # (id, graph, statuses (others Pending), ready, skipped, outcome)
    ("linear-start", LINEAR, {}, ("a",), (), None),
    ("linear-a-running", LINEAR, {"a": R}, (), (), None),
    ("linear-a-done", LINEAR, {"a": S}, ("b",), (), None),
    ("linear-b-done", LINEAR, {"a": S, "b": S}, ("c",), (), None),
    ("linear-all-done", LINEAR, {"a": S, "b": S, "c": S}, (), (), RunStatus.SUCCEEDED),
    ("linear-a-failed", LINEAR, {"a": F}, (), ("b", "c"), RunStatus.FAILED),
    ("linear-b-failed", LINEAR, {"a": S, "b": F}, (), ("c",), RunStatus.FAILED),
    ("linear-a-timed-out", LINEAR, {"a": T}, (), ("b", "c"), RunStatus.FAILED),
    ("linear-a-cancelled", LINEAR, {"a": C}, (), ("b", "c"), RunStatus.CANCELLED),
    ("diamond-start", DIAMOND, {}, ("a",), (), None),
    ("diamond-split", DIAMOND, {"a": S}, ("b", "c"), (), None),
    ("diamond-one-branch-done", DIAMOND, {"a": S, "b": S}, ("c",), (), None),
    ("diamond-waits-for-both", DIAMOND, {"a": S, "b": S, "c": R}, (), (), None),
    ("diamond-join", DIAMOND, {"a": S, "b": S, "c": S}, ("d",), (), None),
    ("diamond-a-failed", DIAMOND, {"a": F}, (), ("b", "c", "d"), RunStatus.FAILED),
    ("fan-in-one-branch-failed", DIAMOND, {"a": S, "b": S, "c": F}, (), ("d",), RunStatus.FAILED),
    ("fan-in-failed-branch-still-running-other", DIAMOND, {"a": S, "b": R, "c": F}, (), (), None),
    ("fan-in-accepts-failure", FAN_IN_HANDLED, {"a": S, "b": S, "c": F}, ("d",), (), None),
    ("fan-in-accepts-failure-done", FAN_IN_HANDLED, {"a": S, "b": S, "c": F, "d": S}, (), (), RunStatus.SUCCEEDED),
    ("fan-in-accepts-success", FAN_IN_HANDLED, {"a": S, "b": S, "c": S}, ("d",), (), None),
    ("fan-in-other-branch-failed", FAN_IN_HANDLED, {"a": S, "b": F, "c": S}, (), ("d",), RunStatus.FAILED),
    ("orders-charge-ok", ORDERS, {"fetch": S, "charge": S}, ("ship",), ("alert",), None),
    ("orders-charge-failed", ORDERS, {"fetch": S, "charge": F}, ("alert",), ("ship",), None),
    ("orders-alert-done", ORDERS, {"fetch": S, "charge": F, "ship": K, "alert": S}, (), (), RunStatus.SUCCEEDED),
    ("orders-alert-failed", ORDERS, {"fetch": S, "charge": F, "ship": K, "alert": F}, (), (), RunStatus.FAILED),
    ("orders-shipped", ORDERS, {"fetch": S, "charge": S, "ship": S, "alert": K}, (), (), RunStatus.SUCCEEDED),
    ("orders-charge-timed-out", ORDERS, {"fetch": S, "charge": T}, (), ("ship", "alert"), RunStatus.FAILED),
    ("orders-fetch-failed", ORDERS, {"fetch": F}, (), ("charge", "ship", "alert"), RunStatus.FAILED),
    ("both-after-success", BOTH, {"a": S}, ("b",), (), None),
    ("both-after-failure", BOTH, {"a": F}, ("b",), (), None),
    ("both-after-skip", BOTH, {"a": K}, (), ("b", "c"), RunStatus.SUCCEEDED),
    ("both-after-cancel", BOTH, {"a": C}, (), ("b", "c"), RunStatus.CANCELLED),
    ("both-after-timeout", BOTH, {"a": T}, (), ("b", "c"), RunStatus.FAILED),
    ("both-handled", BOTH, {"a": F, "b": S, "c": S}, (), (), RunStatus.SUCCEEDED),
    ("on-skip-runs", ON_SKIP, {"a": F}, ("c",), ("b",), None),
    ("on-skip-not-when-ran", ON_SKIP, {"a": S, "b": S}, (), ("c", "d"), RunStatus.SUCCEEDED),
    ("on-skip-finished", ON_SKIP, {"a": F, "b": K, "c": S}, ("d",), (), None),
    ("any-after-success", ANY, {"a": S}, ("b",), (), None),
    ("any-after-failure", ANY, {"a": F}, ("b",), (), None),
    ("any-after-skip", ANY, {"a": K}, ("b",), (), None),
    ("any-after-cancel", ANY, {"a": C}, ("b",), (), None),
    ("any-after-timeout", ANY, {"a": T}, ("b",), (), None),
    ("any-not-after-running", ANY, {"a": R}, (), (), None),
    ("any-not-after-pending", ANY, {"a": P}, ("a",), (), None),
    ("multi-entry-start", MULTI_ENTRY, {}, ("x", "y", "z"), (), None),
    ("multi-entry-partial", MULTI_ENTRY, {"x": S, "y": R, "z": S}, ("k",), (), None),
    ("multi-entry-y-not-started", MULTI_ENTRY, {"x": S, "z": S}, ("y", "k"), (), None),
    ("multi-entry-one-failed", MULTI_ENTRY, {"x": S, "y": F, "z": S, "k": S}, (), ("j",), RunStatus.FAILED),
    ("multi-entry-done", MULTI_ENTRY, {"x": S, "y": S, "z": S, "k": S, "j": S}, (), (), RunStatus.SUCCEEDED),
    # j cannot be decided before b2 is final, even though c3 already rules it out
    ("skip-merge", SKIP_MERGE, {"a": S, "b": S, "c": F}, ("b2",), ("c2", "c3"), None),
    ("skip-merge-b2-done", SKIP_MERGE, {"a": S, "b": S, "c": F, "b2": S, "c2": K, "c3": K}, (), ("j", "after"), RunStatus.FAILED),
    ("skip-merge-all", SKIP_MERGE, {"a": F}, (), ("b", "c", "b2", "c2", "c3", "j", "after"), RunStatus.FAILED),
    (
        "long-skip-chain",
        LONG,
        {"s0": S, "s1": F},
        (),
        tuple(f"s{i}" for i in range(2, 12)),
        RunStatus.FAILED,
    ),
]


@pytest.mark.parametrize(
    ("spec", "given", "ready", "skipped", "outcome"),
    [pytest.param(*case[1:], id=case[0]) for case in ADVANCE_CASES],
)
def test_advance(
    spec: Spec,
    given: dict[str, StepStatus],
    ready: tuple[str, ...],
    skipped: tuple[str, ...],
    outcome: RunStatus | None,
) -> None:
    g = graph(spec)
    st = states(spec, **given)
    decision = advance(g, st)
    assert isinstance(decision, Decision)
    assert decision.ready == ready
    assert set(decision.skipped) == set(skipped)
    assert decision.outcome is outcome
    # skipped steps come out in topological order
    assert list(decision.skipped) == [k for k in g.order if k in decision.skipped]
    # pure: the caller's statuses are not touched
    assert st == states(spec, **given)
    # applying the decision and advancing again changes nothing more
    if not ready:
        after = {**st, **dict.fromkeys(decision.skipped, K)}
        again = advance(g, after)
        assert (again.ready, again.skipped) == ((), ())
        assert again.outcome is outcome


def test_long_skip_chain_cascades_to_the_end_in_one_call_from_a_candidate() -> None:
    g = graph(LONG)
    st = states(LONG, s0=S, s1=F)
    decision = advance(g, st, candidates=["s2"])  # only the direct successor of the failed step
    assert decision.skipped == tuple(f"s{i}" for i in range(2, 12))
    assert decision.ready == ()
    assert decision.outcome is RunStatus.FAILED


def test_skip_cascade_from_candidates_reaches_a_join_through_its_last_branch() -> None:
    # a -> b -> d and a -> c -> x -> d: d is reached through b before x is skipped
    spec: Spec = {"a": {}, "b": {"a": [S]}, "c": {"a": [S]}, "x": {"c": [S]}, "d": {"b": [S], "x": [S]}, "e": {"d": [S]}}
    decision = advance(graph(spec), states(spec, a=F), candidates=["b", "c"])
    assert set(decision.skipped) == {"b", "c", "x", "d", "e"}
    assert decision.outcome is RunStatus.FAILED


def test_skip_cascade_reaches_a_step_accepting_skipped_and_makes_it_ready() -> None:
    spec: Spec = {"a": {}, "b": {"a": [S]}, "c": {"b": [S]}, "cleanup": {"c": [K]}, "after": {"cleanup": [S]}}
    decision = advance(graph(spec), states(spec, a=F), candidates=["b"])
    assert decision.skipped == ("b", "c")
    assert decision.ready == ("cleanup",)
    assert decision.outcome is None


@pytest.mark.parametrize("pred_status", sorted(FINAL_STEP_STATUSES))
def test_empty_allowed_set_accepts_every_final_status(pred_status: StepStatus) -> None:
    decision = advance(graph(ANY), states(ANY, a=pred_status))
    assert decision.ready == ("b",)
    assert decision.skipped == ()


@pytest.mark.parametrize("pred_status", NON_FINAL)
def test_empty_allowed_set_never_accepts_running_or_pending(pred_status: StepStatus) -> None:
    g = graph(ANY)
    decision = advance(g, states(ANY, a=pred_status), dispatched={"a"}, candidates=["b"])
    assert decision == Decision((), (), None)
    assert accepts(g, "b", states(ANY, a=pred_status)) is None


@pytest.mark.parametrize(
    ("allowed", "pred_status", "verdict"),
    [
        ([S], S, True),
        ([S], F, False),
        ([S], K, False),
        ([S], C, False),
        ([S], T, False),
        ([F], F, True),
        ([F], T, False),
        ([F, T], T, True),
        ([S, F], S, True),
        ([S, F], F, True),
        ([S, F], K, False),
        ([K], K, True),
        ([K], S, False),
        ([C], C, True),
        ([], S, True),
        ([], K, True),
        ([S], R, None),
        ([S], P, None),
        ([], R, None),
        ([], P, None),
    ],
)
def test_accepts(allowed: list[StepStatus], pred_status: StepStatus, verdict: bool | None) -> None:
    spec: Spec = {"a": {}, "b": {"a": allowed}}
    assert accepts(graph(spec), "b", {"a": pred_status, "b": P}) is verdict


def test_accepts_needs_every_predecessor_final_and_accepted() -> None:
    g = graph(DIAMOND)
    assert accepts(g, "d", states(DIAMOND, a=S, b=S, c=R)) is None
    assert accepts(g, "d", states(DIAMOND, a=S, b=F, c=R)) is None  # undecided until every predecessor is final
    assert accepts(g, "d", states(DIAMOND, a=S, b=F, c=S)) is False
    assert accepts(g, "d", states(DIAMOND, a=S, b=S, c=S)) is True
    assert accepts(g, "a", states(DIAMOND)) is True  # entry step


# --- dispatched and candidates ----------------------------------------------------------


def test_dispatched_steps_are_not_reported_ready_again() -> None:
    g = graph(MULTI_ENTRY)
    st = states(MULTI_ENTRY)
    assert advance(g, st).ready == ("x", "y", "z")
    decision = advance(g, st, dispatched={"x", "z"})
    assert decision.ready == ("y",)
    assert decision.outcome is None
    decision = advance(g, st, dispatched=frozenset({"x", "y", "z"}))
    assert decision == Decision((), (), None)  # dispatched Pending steps keep the run open


def test_dispatched_step_is_not_skipped() -> None:
    # b is Pending and already handed to a runtime (e.g. a retry raced a failure): leave it alone
    g = graph(LINEAR)
    decision = advance(g, states(LINEAR, a=F), dispatched={"b"})
    assert decision.skipped == ()
    assert decision.ready == ()
    assert decision.outcome is None


@pytest.mark.parametrize("status", [R, S, F, K, C, T])
def test_only_pending_steps_become_ready_or_skipped(status: StepStatus) -> None:
    g = graph(LINEAR)
    decision = advance(g, states(LINEAR, a=F, b=status))
    assert "b" not in decision.ready
    assert "b" not in decision.skipped


def test_candidates_limit_the_readiness_check() -> None:
    g = graph(MULTI_ENTRY)
    st = states(MULTI_ENTRY, x=S, y=S, z=S)
    assert advance(g, st).ready == ("j", "k")
    assert advance(g, st, candidates=["j"]).ready == ("j",)
    assert advance(g, st, candidates=["k"]).ready == ("k",)
    assert advance(g, st, candidates=[]).ready == ()
    assert advance(g, st, candidates=["k", "j", "k"]).ready == ("k", "j")  # no duplicates


def test_candidates_limit_skips_to_those_reachable_from_them() -> None:
    g = graph(MULTI_ENTRY)
    st = states(MULTI_ENTRY, x=F, y=S, z=F)
    assert advance(g, st, candidates=["j"]).skipped == ("j",)
    assert set(advance(g, st).skipped) == {"j", "k"}


def test_candidates_outcome_still_waits_for_unchecked_pending_steps() -> None:
    g = graph(MULTI_ENTRY)
    st = states(MULTI_ENTRY, x=S, y=S, z=S, k=S)
    decision = advance(g, st, candidates=["k"])  # j is ready but not a candidate
    assert decision == Decision((), (), None)


def test_no_outcome_while_a_step_is_ready() -> None:
    decision = advance(graph(ORDERS), states(ORDERS, fetch=S, charge=F))
    assert decision.ready == ("alert",)
    assert decision.outcome is None


# --- classify ------------------------------------------------------------------------

CLASSIFY_CASES: list[tuple[str, Spec, dict[str, StepStatus], RunStatus | None]] = [
    ("all-succeeded", LINEAR, {"a": S, "b": S, "c": S}, RunStatus.SUCCEEDED),
    ("unhandled-failure", LINEAR, {"a": S, "b": F, "c": K}, RunStatus.FAILED),
    ("unhandled-timeout", LINEAR, {"a": T, "b": K, "c": K}, RunStatus.FAILED),
    ("handled-failure", ORDERS, {"fetch": S, "charge": F, "ship": K, "alert": S}, RunStatus.SUCCEEDED),
    ("handler-failed-too", ORDERS, {"fetch": S, "charge": F, "ship": K, "alert": F}, RunStatus.FAILED),
    ("handler-skipped", ORDERS, {"fetch": S, "charge": F, "ship": K, "alert": K}, RunStatus.FAILED),
    ("handled-by-both-list", BOTH, {"a": F, "b": S, "c": S}, RunStatus.SUCCEEDED),
    ("timeout-not-handled-by-failed", {"a": {}, "h": {"a": [F]}}, {"a": T, "h": K}, RunStatus.FAILED),
    ("timeout-handled-by-timedout", {"a": {}, "h": {"a": [T]}}, {"a": T, "h": S}, RunStatus.SUCCEEDED),
    # a successor that accepts any status is a "finally", not a handler: it does not name the failure
    ("any-is-not-a-handler", ANY, {"a": F, "b": S}, RunStatus.FAILED),
    ("cancelled", LINEAR, {"a": S, "b": C, "c": K}, RunStatus.CANCELLED),
    ("cancelled-entry", LINEAR, {"a": C, "b": K, "c": K}, RunStatus.CANCELLED),
    ("cancelled-beats-earlier-failure", {"x": {}, "y": {}}, {"x": F, "y": C}, RunStatus.CANCELLED),
    ("cancelled-beats-later-failure", {"y": {}, "x": {}}, {"x": F, "y": C}, RunStatus.CANCELLED),
    ("all-skipped-but-entry", LINEAR, {"a": S, "b": K, "c": K}, RunStatus.SUCCEEDED),
    ("fan-in-failed-branch", DIAMOND, {"a": S, "b": S, "c": F, "d": K}, RunStatus.FAILED),
    ("fan-in-handled", FAN_IN_HANDLED, {"a": S, "b": S, "c": F, "d": S}, RunStatus.SUCCEEDED),
    # the failure of b is not handled: d was skipped because of it
    ("fan-in-handler-skipped", FAN_IN_HANDLED, {"a": S, "b": F, "c": F, "d": K}, RunStatus.FAILED),
    ("pending-left", LINEAR, {"a": S, "b": S, "c": P}, None),
    ("running-left", LINEAR, {"a": S, "b": S, "c": R}, None),
    ("failed-but-handler-pending", ORDERS, {"fetch": S, "charge": F, "ship": K, "alert": P}, None),
    ("failed-but-other-running", MULTI_ENTRY, {"x": F, "y": S, "z": R, "j": K, "k": P}, None),
    ("cancelled-but-running", LINEAR, {"a": C, "b": R, "c": P}, None),
]


@pytest.mark.parametrize(
    ("spec", "given", "outcome"),
    [pytest.param(*case[1:], id=case[0]) for case in CLASSIFY_CASES],
)
def test_classify(spec: Spec, given: dict[str, StepStatus], outcome: RunStatus | None) -> None:
    assert classify(graph(spec), states(spec, **given)) is outcome


@pytest.mark.parametrize("non_final", NON_FINAL)
@pytest.mark.parametrize("final", sorted(FINAL_STEP_STATUSES))
@pytest.mark.parametrize("position", ["a", "b", "c"])
def test_run_never_classified_while_any_step_is_not_final(non_final: StepStatus, final: StepStatus, position: str) -> None:
    st = {k: final for k in LINEAR}
    st[position] = non_final
    g = graph(LINEAR)
    assert classify(g, st) is None
    assert advance(g, st, dispatched={position}).outcome is None


# --- Graph -----------------------------------------------------------------------------

BUILD_CASES: list[tuple[str, Spec, tuple[str, ...]]] = [
    ("single", {"a": {}}, ("a",)),
    ("linear", LINEAR, ("a",)),
    ("diamond", DIAMOND, ("a",)),
    ("multi-entry", MULTI_ENTRY, ("x", "y", "z")),
    ("declared-out-of-order", {"c": {"b": []}, "b": {"a": []}, "a": {}}, ("a",)),
]


@pytest.mark.parametrize(("spec", "entries"), [pytest.param(*c[1:], id=c[0]) for c in BUILD_CASES])
def test_build_gives_a_topological_order(spec: Spec, entries: tuple[str, ...]) -> None:
    g = graph(spec)
    assert sorted(g.order) == sorted(spec)
    pos = {k: i for i, k in enumerate(g.order)}
    for k, ps in spec.items():
        for p in ps:
            assert pos[p] < pos[k], f"{p} must come before {k}"
            assert k in g.succs[p]
        assert set(g.preds[k]) == set(ps)
    assert g.entries == entries
    assert set(g.succs) == set(spec)


@pytest.mark.parametrize(
    ("spec", "named", "not_named"),
    [
        pytest.param({"a": {"a": []}}, {"a"}, set(), id="self-loop"),
        pytest.param({"a": {"b": []}, "b": {"a": []}}, {"a", "b"}, set(), id="two"),
        pytest.param({"e": {}, "a": {"e": [], "c": []}, "b": {"a": []}, "c": {"b": []}}, {"a", "b", "c"}, {"e"}, id="three"),
        pytest.param(
            {"e": {}, "a": {"e": [], "b": []}, "b": {"a": []}, "after": {"b": []}, "after2": {"after": []}},
            {"a", "b"},
            {"e", "after", "after2"},
            id="steps-after-a-cycle-not-named",
        ),
        pytest.param(
            {"a": {"b": []}, "b": {"a": []}, "x": {"y": []}, "y": {"x": []}, "ok": {}},
            {"a", "b", "x", "y"},
            {"ok"},
            id="two-cycles",
        ),
    ],
)
def test_build_rejects_cycles_naming_their_steps(spec: Spec, named: set[str], not_named: set[str]) -> None:
    with pytest.raises(ValueError) as info:
        graph(spec)
    listed = {s.strip() for s in str(info.value).split(",")}
    assert listed == named
    assert not (listed & not_named)


DESCENDANT_CASES: list[tuple[Spec, str, list[str]]] = [
    (LINEAR, "a", ["b", "c"]),
    (LINEAR, "b", ["c"]),
    (LINEAR, "c", []),
    (DIAMOND, "a", ["b", "c", "d"]),
    (DIAMOND, "b", ["d"]),
    (DIAMOND, "d", []),
    (ORDERS, "charge", ["ship", "alert"]),
    (ORDERS, "fetch", ["charge", "ship", "alert"]),
    (MULTI_ENTRY, "x", ["j"]),
    (MULTI_ENTRY, "z", ["k"]),
    (SKIP_MERGE, "c", ["c2", "c3", "j", "after"]),
    (SKIP_MERGE, "b", ["b2", "j", "after"]),
    (LONG, "s9", ["s10", "s11"]),
]


@pytest.mark.parametrize(("spec", "key", "expected"), DESCENDANT_CASES)
def test_descendants(spec: Spec, key: str, expected: list[str]) -> None:
    g = graph(spec)
    got = g.descendants(key)
    assert got == expected
    assert key not in got
    assert got == [k for k in g.order if k in got]  # topological order, no duplicates
