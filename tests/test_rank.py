"""Ranking properties: a failed case never helps a team, under any year's weights and either tie rule."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation import rank
from evaluation.rules import RULES

METRICS = ("DSC_mean", "NSD_mean", "Time", "MaxGPU_Mem", "AUC_GPU_Time", "AUC_CPU_Time")
FAILURES = ("timeout", "crashed", "no-output", "no-input", "absent")  # absent: the row is missing
BEST = {"DSC_mean": 1.0, "NSD_mean": 1.0, "Time": 0.01, "MaxGPU_Mem": 0.0, "AUC_GPU_Time": 0.0, "AUC_CPU_Time": 0.0}

value = st.floats(0.0, 1e7, allow_nan=False)


@st.composite
def a_team(draw, n_cases: int, gpu_measured: bool) -> dict[str, list]:
    """Per-case values and statuses of a team (any statuses)."""
    columns = {m: [draw(st.floats(0, 1)) if m.endswith("_mean") else draw(value) for _ in range(n_cases)]
               for m in METRICS}
    if not gpu_measured:
        columns["MaxGPU_Mem"] = columns["AUC_GPU_Time"] = [math.nan] * n_cases
    columns["Status"] = [draw(st.sampled_from(("ok",) * 4 + FAILURES)) for _ in range(n_cases)]
    return columns


def _frame(columns: dict[str, list]) -> pd.DataFrame:
    frame = pd.DataFrame({"Name": [f"c{i}" for i in range(len(columns["Status"]))], **columns})
    return frame[frame["Status"] != "absent"].reset_index(drop=True)


@st.composite
def contest(draw):
    """A correct team (every case ok), a team identical to it except that it fails fast on at
    least one case (with the best values there), and up to two other teams."""
    n = draw(st.integers(1, 6))
    gpu = draw(st.booleans())
    correct = draw(a_team(n, gpu))
    correct["Status"] = ["ok"] * n
    failing = {k: list(v) for k, v in correct.items()}
    failed = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    for i in failed:
        failing["Status"][i] = draw(st.sampled_from(FAILURES))
        for metric in METRICS:
            failing[metric][i] = BEST[metric] if gpu or "GPU" not in metric else math.nan
    others = draw(st.lists(a_team(n, gpu), max_size=2))
    return correct, failing, others


@settings(max_examples=150, deadline=None)
@given(contest(), st.sampled_from(sorted(RULES)), st.sampled_from(rank.TIES))
def test_a_fast_failing_team_never_outranks_a_correct_one_when_failures_are_penalised(teams, year, ties):
    correct, failing, others = teams
    per_case = {"correct": _frame(correct), "failing": _frame(failing),
                **{f"other{i}": _frame(o) for i, o in enumerate(others)}}
    ranking = rank.rank_teams(per_case, RULES[year].efficiency.rank_weights, ties=ties, policy="penalised")
    table = ranking.table.set_index("team")
    assert table.loc["failing", "score"] > table.loc["correct", "score"]
    assert table.loc["failing", "position"] > table.loc["correct", "position"]


def test_the_official_policy_ranks_failed_cases_by_their_values():
    """The documented difference: under the official policy a fast crash can win on time."""
    correct = pd.DataFrame({"Name": ["c0"], "Status": ["ok"], "DSC_mean": [0.9], "NSD_mean": [0.9], "Time": [100.0]})
    crashed = correct.assign(Status="crashed", Time=0.1)
    official = rank.rank_teams({"correct": correct, "crashed": crashed}, {"Time": 1})  # the default
    assert official.table["team"].tolist() == ["crashed", "correct"]
    penalised = rank.rank_teams({"correct": correct, "crashed": crashed}, {"Time": 1}, policy="penalised")
    assert penalised.table["team"].tolist() == ["correct", "crashed"]


def test_equal_scores_summed_in_another_order_tie():
    """Mean ranks 1.0 / 1.2 / 1.1 against 1.2 / 1.1 / 1.0: the same score (1.1), one place, however
    the floating-point sums round."""
    def team(losses):
        frame = {"Name": [f"c{i}" for i in range(10)], "Status": ["ok"] * 10}
        for metric, (start, lost) in zip(("DSC_mean", "NSD_mean", "Time"), losses):
            worse = np.zeros(10, bool)
            worse[start:start + lost] = True
            frame[metric] = np.where(worse, 0.6 if metric == "Time" else 0.4, 0.5)
        return pd.DataFrame(frame)

    a, b = team([(0, 0), (0, 2), (0, 1)]), team([(2, 2), (2, 1), (0, 0)])
    table = rank.rank_teams({"a": a, "b": b}, {"DSC": 1, "NSD": 1, "Time": 1}).table.set_index("team")
    assert sorted(table[["rank_DSC", "rank_NSD", "rank_Time"]].loc["a"]) == sorted(
        table[["rank_DSC", "rank_NSD", "rank_Time"]].loc["b"])
    assert table.loc["a", "position"] == table.loc["b", "position"] == 1


@pytest.mark.parametrize("policy", rank.FAILURE_POLICIES)
def test_teams_that_failed_every_case_tie_rather_than_stop_the_ranking(policy):
    failed = pd.DataFrame({"Name": ["c0"], "Status": ["crashed"], "DSC_mean": [0.0], "NSD_mean": [0.0],
                           "Time": [math.nan]})
    table = rank.rank_teams({"a": failed, "b": failed.assign(Status="timeout")}, {"DSC": 1, "Time": 1},
                            policy=policy).table
    assert table["position"].tolist() == [1, 1]


@pytest.mark.parametrize("ties", rank.TIES)
def test_case_ranks_follow_challenger(ties):
    """Measured values by value, then the not-measured tier, then failed: ties by min or average."""
    values = np.array([0.5, 0.7, 0.7, np.nan, np.nan, 0.9])
    tiers = np.array([0, 0, 0, 1, 1, 2])
    ranks = rank.case_ranks(values, tiers, higher_is_better=True, ties=ties)
    expected = [3, 1, 1, 4, 4, 6] if ties == "min" else [3, 1.5, 1.5, 4.5, 4.5, 6]
    assert ranks.tolist() == expected


def test_a_case_given_the_stuck_values_ranks_by_them_officially_and_last_when_penalised():
    """FLARE22: a timeout's stuck values are values to the organisers (a team that used more GPU
    area in the time limit than the stuck 3600 x 8192 MB·s ranks behind it); penalised, the case
    ranks last. Without NVML the stuck area is the only finite GPU value: the metric is left out
    rather than won by it."""
    stuck = 3600 * (10240 - 2048)
    hung = pd.DataFrame({"Name": ["c1", "c2"], "Status": ["ok", "timeout"], "Penalised": [False, True],
                         "DSC_mean": [0.9, 0.0], "NSD_mean": [0.9, 0.0], "Time": [10.0, 3600.0],
                         "AUC_GPU_Time": [900.0, stuck], "AUC_CPU_Time": [500.0, 360000.0]})
    greedy = hung.assign(Status="ok", Penalised=False, DSC_mean=0.9, NSD_mean=0.9, Time=[10.0, 3500.0],
                         AUC_GPU_Time=[900.0, 3500 * 14336.0], AUC_CPU_Time=500.0)
    weights = RULES["flare22"].efficiency.rank_weights
    official = rank.rank_teams({"hung": hung, "greedy": greedy}, weights, policy="official")
    assert official.per_case["AUC_GPU_Time"].loc["c2"].to_dict() == {"hung": 1, "greedy": 2}
    assert official.notices == ["hung: 1 failed case(s) ranked by their values (official policy), 1 by the year's "
                                "stuck values: c2"]  # what the notice says is what was done
    crashed = hung.assign(Status=["ok", "crashed"], Penalised=False)  # a failure without stuck values (FLARE21, 23)
    assert rank.rank_teams({"hung": crashed, "greedy": greedy}, weights, policy="official").notices == [
        "hung: 1 failed case(s) ranked by their values (official policy): c2"]
    penalised = rank.rank_teams({"hung": hung, "greedy": greedy}, weights, policy="penalised")
    assert penalised.notices == ["hung: 1 failed case(s) ranked last: c2"]
    assert penalised.per_case["AUC_GPU_Time"].loc["c2"].to_dict() == {"hung": 2, "greedy": 1}
    as_read_back = hung.assign(Penalised=["False", "True"])  # a results.csv column read back with NaN elsewhere
    again = rank.rank_teams({"hung": as_read_back, "greedy": greedy}, {"AUC_GPU_Time": 1}, policy="penalised")
    assert again.per_case["AUC_GPU_Time"].loc["c2"].to_dict() == {"hung": 2, "greedy": 1}
    no_nvml = {"hung": hung.assign(AUC_GPU_Time=[math.nan, stuck]), "greedy": greedy.assign(AUC_GPU_Time=math.nan)}
    for policy in rank.FAILURE_POLICIES:
        ranking = rank.rank_teams(no_nvml, weights, policy=policy)
        assert "AUC_GPU_Time" not in ranking.per_case and ranking.table["team"].tolist() == ["greedy", "hung"]


@pytest.mark.parametrize("policy", rank.FAILURE_POLICIES)
def test_a_metric_measured_for_no_team_is_left_out_even_beside_failed_cases(policy):
    """Without NVML no team has a GPU reading: the failed cases (or the missing ones) must not rank
    the teams on that metric a second time; it is left out, with the notice, and the others'
    weights renormalised."""
    ok = pd.DataFrame({"Name": ["c1", "c2"], "Status": ["ok", "ok"], "DSC_mean": [0.9, 0.9], "NSD_mean": [0.9, 0.9],
                       "Time": [10.0, 10.0], "MaxGPU_Mem": [math.nan, math.nan]})
    crashed = ok.assign(Status=["ok", "crashed"], DSC_mean=[0.9, 0.0], NSD_mean=[0.9, 0.0])
    for other in (crashed, crashed.iloc[:1]):  # a failed case, a missing one
        ranking = rank.rank_teams({"ok": ok, "other": other}, RULES["flare21"].efficiency.rank_weights, policy=policy)
        assert "MaxGPU_Mem" not in ranking.per_case and "rank_MaxGPU_Mem" not in ranking.table
        assert any(n.startswith("MaxGPU_Mem: measured for no team") for n in ranking.notices)
        assert ranking.table["team"].tolist() == ["ok", "other"]
