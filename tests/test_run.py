"""The organiser's flow: evaluation.run, then ranking and comparison of result folders."""
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from evaluation import compare, rank, run
from evaluation.synthetic import main as synthetic

COPY = 'for f in {inputs}/*_0000.nii.gz; do n=$(basename "$f" _0000.nii.gz); cp %s/$n.nii.gz {outputs}/; done'


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    synthetic(["-o", str(root), "--cases", "3", "--max-side", "48"])
    return root


def test_synthetic_predictions_share_the_ground_truths_file_layout(data):
    """Phantoms are stored in varied orientations; each prediction is on its ground truth's grid."""
    for gt_path in sorted((data / "gt").iterdir()):
        gt, pred = nib.load(gt_path), nib.load(data / "pred" / gt_path.name)
        image = nib.load(data / "images" / gt_path.name.replace(".nii.gz", "_0000.nii.gz"))
        assert gt.header.binaryblock == pred.header.binaryblock and image.shape == gt.shape
        assert max(gt.shape) <= 48 and pred.get_data_dtype() == "uint8"


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, Path]:
    """Two 'teams': one returns the synthetic predictions, the other the ground truth itself."""
    out = tmp_path_factory.mktemp("runs")
    folders = {}
    for team, source in (("decent", data / "pred"), ("perfect", data / "gt")):
        folders[team] = out / team
        code = run.main(["--inputs", str(data / "images"), "--gt", str(data / "gt"), "--out", str(folders[team]),
                         "--command", COPY % source, "--interval", "0.02", "--baseline", "0.1"])
        assert code == 0
    return folders


def test_run_writes_the_joined_results_and_the_report(runs):
    folder = runs["decent"]
    results = pd.read_csv(folder / "results.csv")
    assert len(results) == 3 and results["Status"].eq("ok").all()
    assert list(results.columns[:4]) == ["Name", "DSC_mean", "NSD_mean", "Time"]
    assert results["DSC_mean"].between(0.7, 0.99).all()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["cases"] == 3 and summary["not_ok"] == 0 and summary["verdict"]["passed"]
    assert summary["mean_dsc"] == pytest.approx(results["DSC_mean"].mean())
    page = (folder / "report.html").read_text()
    for image in ("accuracy.png", "time.png", "memory.png"):
        assert (folder / image).stat().st_size > 1000 and f'src="{image}"' in page
    assert "synthetic_002.nii.gz" in page
    perfect = pd.read_csv(runs["perfect"] / "results.csv")
    assert perfect["DSC_mean"].eq(1.0).all() and perfect["NSD_mean"].eq(1.0).all()


def test_rank_orders_teams_by_average_rank(runs, tmp_path, capsys):
    csv, page = tmp_path / "leaderboard.csv", tmp_path / "leaderboard.html"
    assert rank.main([str(runs["decent"]), str(runs["perfect"]), "--out", str(csv), "--html", str(page),
                      "--bootstrap", "200"]) == 0
    table = pd.read_csv(csv)
    assert table["team"].tolist()[0] == "perfect"  # better DSC and NSD on every case
    assert table.loc[table.team == "perfect", "rank_DSC"].item() == 1.0
    assert table.loc[table.team == "decent", "rank_DSC"].item() == 2.0
    assert table["kept_position"].between(0, 1).all() and table["cases"].eq(3).all()
    assert "rank_MaxGPU_Mem" not in table  # no NVML here: measured for no team, left out
    out, err = capsys.readouterr()
    assert "perfect" in out and "MaxGPU_Mem: measured for no team" in err
    html_text = page.read_text()
    assert "<table>" in html_text and "perfect" in html_text and "measured for no team" in html_text


def test_rank_refuses_mixed_years_and_duplicate_names(runs, data, tmp_path, capsys):
    other_year = tmp_path / "perfect"  # the same folder name as a team of runs: a duplicate name
    assert run.main(["--inputs", str(data / "images"), "--gt", str(data / "gt"), "--out", str(other_year),
                     "--command", COPY % (data / "gt"), "--rules", "flare22", "--baseline", "0"]) == 0
    assert json.loads((other_year / "summary.json").read_text())["team"] == "perfect"
    with pytest.raises(SystemExit) as exc:
        rank.main([str(runs["perfect"]), str(other_year)])
    assert exc.value.code == 2 and "different rules years" in capsys.readouterr().err
    twin = tmp_path / "twin" / "perfect"
    shutil.copytree(runs["perfect"], twin)
    with pytest.raises(SystemExit) as exc:
        rank.main([str(runs["perfect"]), str(twin)])
    assert exc.value.code == 2 and "two teams named 'perfect'" in capsys.readouterr().err
    assert rank.main([str(runs["perfect"]), str(twin), "--name", "first", "second", "--bootstrap", "0"]) == 0
    with pytest.raises(SystemExit) as exc:
        rank.main([str(runs["perfect"]), str(runs["decent"]), "--rules", "flare23"])
    assert exc.value.code == 2 and "run them again under flare23" in capsys.readouterr().err


@pytest.mark.parametrize(("damage", "message"), [
    (lambda f: pd.concat([f, f.iloc[[0]]]), "results.csv: cases listed twice: synthetic_000.nii.gz"),
    (lambda f: f.assign(Time="slow"), "results.csv: Time holds values that are not numbers"),
    (lambda f: f.drop(columns="NSD_mean"), "results.csv: no NSD_mean column"),
    (lambda f: f.assign(Name=[None, *f["Name"][1:]]), "results.csv: a Name column with every case's name is needed"),
])
def test_rank_refuses_results_it_cannot_rank_in_one_line(runs, tmp_path, capsys, damage, message):
    bad = tmp_path / "bad"
    shutil.copytree(runs["decent"], bad)
    damage(pd.read_csv(bad / "results.csv")).to_csv(bad / "results.csv", index=False)
    with pytest.raises(SystemExit) as exc:
        rank.main([str(runs["perfect"]), str(bad), "--bootstrap", "0"])
    assert exc.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1].endswith(message)
    shutil.copy(runs["decent"] / "results.csv", bad)
    (bad / "summary.json").write_text(json.dumps({"rules": "flare21", "team": ["x"]}))
    with pytest.raises(SystemExit) as exc:
        rank.main([str(runs["perfect"]), str(bad), "--bootstrap", "0"])
    assert exc.value.code == 2 and "summary.json: no known rules year" in capsys.readouterr().err


def test_rank_writes_a_self_describing_json_leaderboard(runs, tmp_path, capsys):
    board = tmp_path / "leaderboard.json"
    assert rank.main([str(runs["decent"]), str(runs["perfect"]), "--json", str(board), "--bootstrap", "50"]) == 0
    doc = json.loads(board.read_text())
    assert doc["rules"] == "flare21" and doc["failure_policy"] == "official" and doc["ties"] == "min"
    assert doc["left_out"] == ["MaxGPU_Mem"] and "MaxGPU_Mem" not in doc["weights"] and doc["weights"]["DSC"] == 1
    assert [row["team"] for row in doc["leaderboard"]] == ["perfect", "decent"]
    assert doc["leaderboard"][0]["position"] == 1 and doc["bootstrap"]["samples"] == 50
    assert {t["team"]: t["measurement"]["interval_s"] for t in doc["teams"]} == {"decent": 0.02, "perfect": 0.02}
    assert any("MaxGPU_Mem: measured for no team" in n for n in doc["notices"])


def test_rank_refuses_runs_whose_efficiency_was_measured_differently(runs, tmp_path, capsys):
    """Areas summed over 0.5 s samples do not compare with 0.02 s ones (nor real-time areas with
    official ones, nor two GPUs, nor two timeouts): ranking them would place teams by the settings."""
    coarse = tmp_path / "coarse"
    shutil.copytree(runs["perfect"], coarse)
    summary = json.loads((coarse / "summary.json").read_text())
    summary["measurement"]["interval_s"] = 0.5
    (coarse / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(SystemExit) as exc:
        rank.main([str(runs["decent"]), str(coarse), "--bootstrap", "0"])
    assert exc.value.code == 2
    assert f"interval_s: {runs['decent']} 0.02, {coarse} 0.5" in capsys.readouterr().err
    del summary["measurement"]  # a run from before summary.json recorded it: read from its efficiency.json
    (coarse / "summary.json").write_text(json.dumps(summary))
    assert rank.main([str(runs["decent"]), str(coarse), "--bootstrap", "0"]) == 0


def test_rank_on_accuracy_alone_takes_the_scorers_folders_never_mixed_with_runs(runs, tmp_path, capsys):
    """flare-score folders (a run's accuracy/ is one) rank on DSC and NSD alone, with a notice; a
    missing folder is named as such."""
    assert rank.main([str(runs["decent"] / "accuracy"), str(runs["perfect"] / "accuracy"), "--name", "decent",
                      "perfect", "--out", str(tmp_path / "r.csv"), "--bootstrap", "0"]) == 0
    table = pd.read_csv(tmp_path / "r.csv")
    assert table["team"].tolist() == ["perfect", "decent"]
    assert [c for c in table if c.startswith("rank_")] == ["rank_DSC", "rank_NSD"]
    assert "ranked on accuracy alone (DSC, NSD)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        rank.main([str(runs["decent"]), str(runs["perfect"] / "accuracy"), "--bootstrap", "0"])
    assert exc.value.code == 2 and "give each run's accuracy/ folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        rank.main([str(runs["decent"]), str(tmp_path / "nothere"), "--bootstrap", "0"])
    assert exc.value.code == 2 and f"{tmp_path / 'nothere'}: not a folder" in capsys.readouterr().err


def test_rank_keeps_a_case_one_team_lacks(runs, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(runs["perfect"], partial)
    results = pd.read_csv(partial / "results.csv")
    results[results["Name"] != "synthetic_000.nii.gz"].to_csv(partial / "results.csv", index=False)
    assert rank.main([str(runs["decent"]), str(partial), "--name", "decent", "partial",
                      "--out", str(tmp_path / "r.csv"), "--bootstrap", "0"]) == 0
    table = pd.read_csv(tmp_path / "r.csv").set_index("team")
    assert table["cases"].eq(3).all() and table.loc["partial", "failed_or_missing"] == 1
    assert table.loc["partial", "rank_DSC"] == pytest.approx((2 + 1 + 1) / 3)  # last on the case it lacks
    assert "partial: 1 case(s) missing from its results, ranked last: synthetic_000.nii.gz" in capsys.readouterr().err


def _team(dsc, time, status=None, gpu=None):
    n = len(dsc)
    return pd.DataFrame({"Name": [f"c{i}" for i in range(n)], "Status": status or ["ok"] * n, "DSC_mean": dsc,
                         "NSD_mean": dsc, "Time": time, "MaxGPU_Mem": gpu if gpu is not None else [np.nan] * n})


def test_rank_weights_of_flare22():
    """FLARE22 gives the GPU and CPU areas half weight: with full weights these teams would tie."""
    per_case = {"B": pd.DataFrame({"Name": ["c1", "c2"], "DSC_mean": [0.8, 0.8], "NSD_mean": [0.7, 0.7],
                                   "Time": [10.0, 10.0], "AUC_GPU_Time": [50.0, 50.0], "AUC_CPU_Time": [1.0, 1.0]}),
                "A": pd.DataFrame({"Name": ["c1", "c2"], "DSC_mean": [0.9, 0.9], "NSD_mean": [0.8, 0.8],
                                   "Time": [10.0, 10.0], "AUC_GPU_Time": [100.0, 100.0], "AUC_CPU_Time": [5.0, 5.0]})}
    weights = {"DSC": 1, "NSD": 1, "Time": 1, "AUC_GPU_Time": 0.5, "AUC_CPU_Time": 0.5}
    table = rank.rank_teams(per_case, weights, ties="average").table
    scores = table.set_index("team")["score"]
    assert scores["A"] == pytest.approx((1 + 1 + 1.5 + 0.5 * 2 + 0.5 * 2) / 4)
    assert scores["B"] == pytest.approx((2 + 2 + 1.5 + 0.5 * 1 + 0.5 * 1) / 4)
    assert table["team"].tolist() == ["A", "B"] and table["position"].tolist() == [1, 2]
    minimum = rank.rank_teams(per_case, weights).table.set_index("team")["score"]  # challengeR: ties share 1
    assert minimum["A"] == pytest.approx((1 + 1 + 1 + 0.5 * 2 + 0.5 * 2) / 4)
    equal = rank.rank_teams(per_case, {"DSC": 1, "NSD": 1, "Time": 1, "AUC_GPU_Time": 1, "AUC_CPU_Time": 1})
    assert equal.table["position"].tolist() == [1, 1]


def test_missing_values_tie_and_rank_after_measured_and_before_failed_when_failures_are_penalised():
    per_case = {"measured": _team([0.9], [10.0], gpu=[5000.0]), "unmeasured1": _team([0.9], [10.0]),
                "unmeasured2": _team([0.9], [10.0]),
                "crashed": _team([0.9], [10.0], status=["crashed"], gpu=[29_491_200.0])}
    ranking = rank.rank_teams(per_case, {"MaxGPU_Mem": 1}, ties="average", policy="penalised")
    gpu = ranking.per_case["MaxGPU_Mem"].loc["c0"]
    assert gpu.to_dict() == {"measured": 1.0, "unmeasured1": 2.5, "unmeasured2": 2.5, "crashed": 4.0}
    gpu = rank.rank_teams(per_case, {"MaxGPU_Mem": 1}, policy="penalised").per_case["MaxGPU_Mem"].loc["c0"]
    assert gpu.to_dict() == {"measured": 1, "unmeasured1": 2, "unmeasured2": 2, "crashed": 4}
    nobody = rank.rank_teams({"a": _team([0.9], [10.0]), "b": _team([0.8], [9.0])}, {"DSC": 1, "MaxGPU_Mem": 1})
    assert nobody.left_out == ["MaxGPU_Mem"] and list(nobody.weights) == ["DSC"]
    assert nobody.table["team"].tolist() == ["a", "b"]  # not both last on a metric nobody measured


def test_bootstrap_stability():
    """A team ahead on every case always keeps its place; two teams each ahead on half do not."""
    clear = rank.rank_teams({"a": _team([0.9] * 10, [1.0] * 10), "b": _team([0.5] * 10, [2.0] * 10)},
                            {"DSC": 1, "Time": 1})
    stability, tau = rank.bootstrap(clear, 300, seed=1)
    assert stability["kept_position"].tolist() == [1.0, 1.0] and tau == 1.0
    close = rank.rank_teams({"a": _team([0.9, 0.5] * 5, [1.0] * 10), "b": _team([0.5, 0.9] * 5, [1.0] * 10)},
                            {"DSC": 1})
    stability, _ = rank.bootstrap(close, 300, seed=1)
    assert (stability["kept_position"] < 0.9).all()
    assert stability["position_p5"].tolist() == [1, 1] and stability["position_p95"].tolist() == [2, 2]


def test_compare_reports_changes_and_the_cases_that_fell(runs, tmp_path, capsys):
    out = tmp_path / "comparison.json"
    assert compare.main([str(runs["perfect"]), str(runs["decent"]), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    liver = next(o for o in result["organs"] if o["organ"] == "liver")
    assert liver["DSC_before"] == 1.0 and liver["DSC_change"] < 0
    assert len(result["dsc_fell"]) == 3 and result["dsc_rose"] == [] and result["status_changes"] == []
    assert result["dsc_fell"][0]["DSC_change"] <= result["dsc_fell"][-1]["DSC_change"]
    assert "Time" in result["efficiency"]["figures"] and result["efficiency"]["measured_differently"] == []
    assert (result["before"], result["after"]) == (str(runs["perfect"]), str(runs["decent"]))
    printed = capsys.readouterr().out
    assert "liver" in printed and "cases whose mean DSC fell" in printed and "measured differently" not in printed
    slower = tmp_path / "slower"  # sampled every 0.5 s: its areas are not the same measurement
    shutil.copytree(runs["decent"], slower)
    summary = json.loads((slower / "summary.json").read_text())
    (slower / "summary.json").write_text(json.dumps({**summary, "measurement": {**summary["measurement"],
                                                                                 "interval_s": 0.5}}))
    assert compare.main([str(runs["perfect"]), str(slower), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["efficiency"]["measured_differently"] == ["interval_s: BEFORE 0.02, AFTER 0.5"]
    assert "warning: the runs' efficiency was measured differently (interval_s: BEFORE 0.02, AFTER 0.5)" \
        in capsys.readouterr().out
    assert compare.main([str(runs["decent"]), str(runs["perfect"]), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dsc_fell"] == [] and len(result["dsc_rose"]) == 3  # improvements are never called worse
    printed = capsys.readouterr().out
    fell = printed.split("cases whose mean DSC fell")[1].split("cases whose mean DSC rose")[0]
    assert "none" in fell and "synthetic" not in fell
    scores_only = tmp_path / "scores"
    shutil.copytree(runs["perfect"] / "accuracy", scores_only)
    assert compare.main([str(scores_only), str(runs["decent"])]) == 0
    assert "status changes: not compared (a run of scores only" in capsys.readouterr().out
    for top in ("0", "-1"):
        with pytest.raises(SystemExit):
            compare.main([str(runs["perfect"]), str(runs["decent"]), "--top", top])
    broken = tmp_path / "broken"
    shutil.copytree(runs["decent"], broken)
    pd.read_csv(broken / "results.csv").drop(columns="Status").to_csv(broken / "results.csv", index=False)
    with pytest.raises(SystemExit) as exc:
        compare.main([str(runs["perfect"]), str(broken)])
    assert exc.value.code == 2 and "results.csv: not evaluation.run's results" in capsys.readouterr().err


def test_compare_means_only_the_cases_scored_in_both_runs(runs, tmp_path, capsys):
    """A case scored in one run only is named, not averaged into that run's organ means; two runs
    with no case in common are a usage error."""
    before, _, rules = compare.load(runs["decent"])
    after, _, _ = compare.load(runs["perfect"])
    result = compare.compare(before, after.iloc[1:], rules, top=5)
    first = before["Name"].iloc[0]
    assert result["only_before"] == [first] and result["only_after"] == []
    assert result["cases_compared"] == len(before) - 1
    liver = next(o for o in result["organs"] if o["organ"] == "liver")
    assert liver["DSC_before"] == pytest.approx(before.loc[before["Name"] != first, rules.dsc_column(rules.organs[0])].mean())
    other = tmp_path / "other"
    other.mkdir()
    after.assign(Name="another_" + after["Name"]).to_csv(other / "metrics.csv", index=False)
    with pytest.raises(SystemExit) as exc:
        compare.main([str(runs["decent"]), str(other)])
    assert exc.value.code == 2 and "no case in common" in capsys.readouterr().err


def test_compare_puts_status_changes_first_and_never_calls_failures_faster(runs, data, tmp_path, capsys):
    crash_two = ('case "$(ls {inputs})" in synthetic_00[12]*) exit 3;; esac; ' + COPY % (data / "pred"))
    after = tmp_path / "after"
    assert run.main(["--inputs", str(data / "images"), "--gt", str(data / "gt"), "--out", str(after),
                     "--command", crash_two, "--baseline", "0"]) == 1
    out = tmp_path / "comparison.json"
    capsys.readouterr()
    assert compare.main([str(runs["decent"]), str(after), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(c["Name"], c["after"], c["change"]) for c in result["status_changes"]] == [
        ("synthetic_001.nii.gz", "crashed", "stopped succeeding"),
        ("synthetic_002.nii.gz", "crashed", "stopped succeeding")]
    assert result["efficiency"]["cases_ok_in_both"] == 1  # the crashed cases' short times are not compared
    printed = capsys.readouterr().out
    assert printed.startswith("status changes (2, 2 stopped succeeding)")
    assert "stopped succeeding are not compared: that is no progress" in printed


def test_a_failed_case_scores_zero_under_flare22(data, tmp_path, capsys):
    hang_one = ('case "$(ls {inputs})" in synthetic_001*) sleep 30;; synthetic_002*) exit 3;; esac; '
                + COPY % (data / "gt"))
    code = run.main(["--inputs", str(data / "images"), "--gt", str(data / "gt"), "--out", str(tmp_path / "out"),
                     "--command", hang_one, "--rules", "flare22", "--timeout", "2", "--interval", "0.05",
                     "--baseline", "0", "--failures", "penalised"])
    assert code == 1
    printed = capsys.readouterr().out.split("accuracy with the flare22 rule for stuck cases (2 case(s) scored 0)")
    assert len(printed) == 2, "the table flare-run prints is the one of results.csv, and says so"
    organs = json.loads((tmp_path / "out" / "summary.json").read_text())["organs"]
    esophagus = next(line for line in printed[1].splitlines() if line.startswith("esophagus")).split()
    assert float(esophagus[1]) == pytest.approx(organs["esophagus"]["DSC"]["mean"], abs=5e-5) == pytest.approx(1 / 3)
    scorer = json.loads((tmp_path / "out" / "accuracy" / "summary.json").read_text())["organs"]
    assert scorer["esophagus"]["DSC"]["mean"] == 1  # accuracy/: the outputs as written (absent from both)
    results = pd.read_csv(tmp_path / "out" / "results.csv").set_index("Name")
    stuck = results.loc["synthetic_001.nii.gz"]
    assert stuck["Status"] == "timeout" and stuck["Time"] == 3600 and stuck["AUC_CPU_Time"] == 360000
    assert stuck["DSC_mean"] == 0 and stuck["NSD_mean"] == 0 and stuck["Esophagus_DSC"] == 0
    crashed = results.loc["synthetic_002.nii.gz"]  # the penalised policy: every failure, not only timeouts
    assert crashed["Status"] == "crashed" and crashed["Time"] == 3600 and crashed["MeasuredTime"] < 3600
    assert crashed["DSC_mean"] == 0
    assert results.loc["synthetic_000.nii.gz", "DSC_mean"] == 1.0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["failed_cases_scored_0"] == ["synthetic_001.nii.gz", "synthetic_002.nii.gz"]
    assert summary["organs"]["liver"]["DSC"]["min"] == 0 and summary["failures"] == "penalised"
    assert summary["mean_time_s"] > 2400 > summary["mean_measured_time_s"]  # two cases at 3600 s, none ran that long
    page = (tmp_path / "out" / "report.html").read_text()
    assert "2 stuck case(s) scored 0 on every organ by the flare22 rule for stuck cases" in page
    assert "with the year's stuck values (as measured:" in page
    metrics, _, _ = compare.load(tmp_path / "out")  # compare reads the cases as the run scored them
    assert metrics.set_index("Name").loc["synthetic_001.nii.gz", "Esophagus_DSC"] == 0  # 1 as the scorer saw it


def test_every_ground_truth_without_an_input_is_a_problem(data, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(data / "images" / "synthetic_000_0000.nii.gz", one)
    code = run.main(["--inputs", str(one), "--gt", str(data / "gt"), "--out", str(tmp_path / "out"),
                     "--command", COPY % (data / "gt"), "--baseline", "0"])
    assert code == 1
    results = pd.read_csv(tmp_path / "out" / "results.csv").set_index("Name")
    assert results["Status"].to_dict() == {"synthetic_000.nii.gz": "ok", "synthetic_001.nii.gz": "no-input",
                                           "synthetic_002.nii.gz": "no-input"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["not_ok"] == 2 and summary["cases_with_problems"] == 2
    no_input = [p["case"] for p in summary["problems"] if "no input image" in p["problem"]]
    assert no_input == ["synthetic_001.nii.gz", "synthetic_002.nii.gz"]
    valid = next(c for c in summary["verdict"]["checks"] if c["limit"] == "every case produces a valid output")
    assert valid == {**valid, "passed": False, "value": "2 case(s) did not"} and summary["verdict"]["passed"] is False
    assert "Official verdict (system-wide figures): <b>FAILED</b>" in (tmp_path / "out" / "report.html").read_text()


def test_an_uncompressed_ground_truth_joins_its_case(data, tmp_path):
    """A ground truth stored as <case>.nii is the same case as the submission's <case>.nii.gz."""
    gt = tmp_path / "gt"
    gt.mkdir()
    nib.save(nib.load(data / "gt" / "synthetic_000.nii.gz"), gt / "synthetic_000.nii")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(data / "images" / "synthetic_000_0000.nii.gz", one)
    code = run.main(["--inputs", str(one), "--gt", str(gt), "--out", str(tmp_path / "out"), "--rules", "flare22",
                     "--command", COPY % (data / "gt"), "--baseline", "0", "--interval", "0.02"])
    assert code == 0
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert results["Name"].tolist() == ["synthetic_000.nii"] and results["Status"].tolist() == ["ok"]
    assert results["DSC_mean"].tolist() == [1.0] and results["Time"].iloc[0] < 3600
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["problems"] == []


@pytest.mark.parametrize("year", ["flare21", "flare22", "flare23"])
def test_a_fast_crashing_team_ranks_below_a_correct_one_when_failures_are_penalised(data, tmp_path, year):
    """The crashing team's cases take milliseconds: every efficiency figure of theirs is the best."""
    folders = []
    for team, command in (("crashes", "exit 3 # {inputs} {outputs}"), ("correct", COPY % (data / "pred"))):
        folders.append(tmp_path / team)
        run.main(["--inputs", str(data / "images"), "--gt", str(data / "gt"), "--out", str(folders[-1]),
                  "--command", command, "--rules", year, "--baseline", "0", "--interval", "0.02",
                  "--failures", "penalised"])
    assert rank.main([*map(str, folders), "--out", str(tmp_path / "r.csv"), "--bootstrap", "0"]) == 0
    table = pd.read_csv(tmp_path / "r.csv")
    assert table["team"].tolist() == ["correct", "crashes"] and table["position"].tolist() == [1, 2]
    assert (table.set_index("team").loc["crashes", [c for c in table if c.startswith("rank_")]] == 2).all()


def test_run_refuses_ground_truth_and_output_problems_before_the_submission_runs(tmp_path, monkeypatch, capsys):
    """An empty --gt folder or an --out that cannot be made ends at once (exit 2), not after
    hours of efficiency measurement."""
    monkeypatch.setattr(run.efficiency, "main", lambda argv: pytest.fail("the submission ran"))
    (tmp_path / "gt").mkdir()
    (tmp_path / "afile").write_text("")
    (tmp_path / "case.nii.gz").write_bytes(b"")  # a ground truth (not read before the run)
    for gt, out, message in ((tmp_path / "gt", tmp_path / "out", "no .nii.gz or .nii files"),
                             (tmp_path, tmp_path / "afile" / "out", "cannot create the folder")):
        with pytest.raises(SystemExit) as stopped:
            run.main(["--inputs", str(tmp_path), "--gt", str(gt), "--out", str(out), "--command", "true {inputs} {outputs}"])
        assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_run_passes_every_efficiency_option_on(tmp_path, monkeypatch):
    """flare-run takes flare-efficiency's options (--memory included) and hands them on."""
    class Handed(Exception):
        pass

    def efficiency_run(args, cases, out):
        raise Handed(args, cases, out)

    monkeypatch.setattr(run.efficiency, "run", efficiency_run)
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "case.nii.gz").write_bytes(b"")  # a ground truth is looked for before the run starts
    (tmp_path / "case_0000.nii.gz").write_bytes(b"")  # and an input image
    with pytest.raises(Handed) as handed:
        run.main(["--inputs", str(tmp_path), "--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "out"),
                  "--command", "sh predict.sh {inputs} {outputs}", "--memory", "12g", "--gpu", "1", "--timeout", "60",
                  "--failures", "official", "--baseline", "0", "--busy-cpu", "50", "--rules", "flare22"])
    args, cases, out = handed.value.args
    assert {k: getattr(args, k) for k in ("memory", "gpu", "timeout", "failures", "baseline", "busy_cpu", "rules")} == {
        "memory": "12g", "gpu": 1, "timeout": 60.0, "failures": "official", "baseline": 0.0, "busy_cpu": 50.0,
        "rules": "flare22"}
    assert cases == [tmp_path / "case_0000.nii.gz"] and out == tmp_path / "out" / "efficiency"
    assert args.command == "sh predict.sh {inputs} {outputs}"


def test_usage_errors_name_flare_runs_own_usage(data, tmp_path, capsys):
    for bad in (["--command", "no placeholders"], ["--command", "x {inputs} {outputs}", "--interval", "0"],
                ["--inputs", str(tmp_path / "none"), "--command", "x {inputs} {outputs}"]):
        with pytest.raises(SystemExit) as stopped:
            run.main(["--inputs", str(data / "images"), "--gt", str(data / "gt"), "--out", str(tmp_path / "out"), *bad])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and "usage: python -m evaluation.run" in err and "evaluation.efficiency" not in err
    assert not (tmp_path / "out" / "efficiency").exists()


def test_a_failed_limit_of_the_year_is_a_problem_of_the_run(data, tmp_path, monkeypatch):
    import dataclasses

    flare21 = run.get_rules("flare21")
    tight = dataclasses.replace(flare21, efficiency=dataclasses.replace(flare21.efficiency, set_time_s=1))
    monkeypatch.setattr("evaluation.efficiency.get_rules", lambda name: tight)
    monkeypatch.setattr("evaluation.run.get_rules", lambda name: tight)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(data / "images" / "synthetic_000_0000.nii.gz", one)
    gt = tmp_path / "gt"
    gt.mkdir()
    shutil.copy(data / "gt" / "synthetic_000.nii.gz", gt)
    assert run.main(["--inputs", str(one), "--gt", str(gt), "--out", str(tmp_path / "out"), "--baseline", "0",
                     "--command", COPY % (data / "gt")]) == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["verdict"]["passed"] is False and summary["cases_with_problems"] == 0
    assert [(p["case"], p["source"]) for p in summary["problems"]] == [("all cases", "efficiency (all cases)")]
    assert summary["problems"][0]["problem"].startswith("limit not met: 100 cases within")
    problems = (tmp_path / "out" / "report.html").read_text().split("<h2>Problems</h2>")[1].split("<h2>")[0]
    assert "limit not met: 100 cases within" in problems and "none" not in problems


def test_one_nan_to_null_rule_and_one_organ_header_rule():
    from evaluation import report, report_page

    assert run.json_number is report.json_number is compare.json_number
    assert report.json_number(float("nan")) is None and report.json_number(None) is None
    assert type(report.json_number(np.float64(0.5))) is float
    assert run.organ_header is report_page.organ_header
    headers = [report_page.organ_header(o) for o in run.get_rules("flare21").organs][:1]
    assert headers + [report_page.organ_header(run.get_rules("flare22").organs[1])] == ["liver", "RK"]
