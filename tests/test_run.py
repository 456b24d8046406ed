"""The organiser's flow: evaluation.run, then ranking and comparison of result folders."""
import json
from pathlib import Path

import nibabel as nib
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
                         "--command", COPY % source, "--interval", "0.02"])
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
    assert rank.main([str(runs["decent"]), str(runs["perfect"]), "--out", str(tmp_path / "ranking.csv")]) == 0
    table = pd.read_csv(tmp_path / "ranking.csv")
    assert table["team"].tolist()[0] == "perfect"  # better DSC and NSD on every case
    assert table.loc[table.team == "perfect", "rank_DSC"].item() == 1.0
    assert table.loc[table.team == "decent", "rank_DSC"].item() == 2.0
    assert "perfect" in capsys.readouterr().out


def test_rank_weights_of_flare22():
    """FLARE22 gives the GPU and CPU areas half weight: with full weights these teams would tie."""
    per_case = {"B": pd.DataFrame({"Name": ["c1", "c2"], "DSC_mean": [0.8, 0.8], "NSD_mean": [0.7, 0.7],
                                   "Time": [10.0, 10.0], "AUC_GPU_Time": [50.0, 50.0], "AUC_CPU_Time": [1.0, 1.0]}),
                "A": pd.DataFrame({"Name": ["c1", "c2"], "DSC_mean": [0.9, 0.9], "NSD_mean": [0.8, 0.8],
                                   "Time": [10.0, 10.0], "AUC_GPU_Time": [100.0, 100.0], "AUC_CPU_Time": [5.0, 5.0]})}
    table = rank.rank_teams(per_case, {"DSC": 1, "NSD": 1, "Time": 1, "AUC_GPU_Time": 0.5, "AUC_CPU_Time": 0.5})
    scores = table.set_index("team")["score"]
    assert scores["A"] == pytest.approx((1 + 1 + 1.5 + 0.5 * 2 + 0.5 * 2) / 4)
    assert scores["B"] == pytest.approx((2 + 2 + 1.5 + 0.5 * 1 + 0.5 * 1) / 4)
    assert table["team"].tolist() == ["A", "B"] and table["position"].tolist() == [1, 2]
    equal = rank.rank_teams(per_case, {"DSC": 1, "NSD": 1, "Time": 1, "AUC_GPU_Time": 1, "AUC_CPU_Time": 1})
    assert equal["position"].tolist() == [1, 1]


def test_compare_reports_changes_and_the_worst_cases(runs, tmp_path, capsys):
    out = tmp_path / "comparison.json"
    assert compare.main([str(runs["perfect"]), str(runs["decent"]), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    liver = next(o for o in result["organs"] if o["organ"] == "liver")
    assert liver["DSC_before"] == 1.0 and liver["DSC_change"] < 0
    assert len(result["worst_cases"]) == 3 and result["worst_cases"][0]["DSC_change"] <= result["worst_cases"][-1]["DSC_change"]
    assert "Time" in result["efficiency"]
    printed = capsys.readouterr().out
    assert "liver" in printed and "worse" in printed


def test_a_stuck_case_scores_zero_under_flare22(data, tmp_path):
    hang_one = ('case "$(ls {inputs})" in synthetic_001*) sleep 30;; esac; ' + COPY % (data / "gt"))
    code = run.main(["--inputs", str(data / "images"), "--gt", str(data / "gt"), "--out", str(tmp_path / "out"),
                     "--command", hang_one, "--rules", "flare22", "--timeout", "2", "--interval", "0.05"])
    assert code == 1
    results = pd.read_csv(tmp_path / "out" / "results.csv").set_index("Name")
    stuck = results.loc["synthetic_001.nii.gz"]
    assert stuck["Status"] == "timeout" and stuck["Time"] == 3600 and stuck["AUC_CPU_Time"] == 360000
    assert stuck["DSC_mean"] == 0 and stuck["NSD_mean"] == 0 and stuck["Esophagus_DSC"] == 0
    assert results.loc["synthetic_000.nii.gz", "DSC_mean"] == 1.0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stuck_cases_scored_0"] == ["synthetic_001.nii.gz"]
    assert summary["organs"]["liver"]["DSC"]["min"] == 0
