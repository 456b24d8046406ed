"""The score CLI end to end: official numbers on real anatomy, files, bad input, exit codes."""
import csv
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from evaluation import report
from evaluation.rules import get_rules
from evaluation.score import main
from evaluation.synthetic import case_pair, save_labels
from flare_common import files
from flare_common.nifti import MISCASED

ROOT = Path(__file__).resolve().parents[1]
SPACING = (6.0, 5.0, 14.0)  # 48 x 48 x 20 voxels: 288 x 240 x 280 mm, the whole of the four organs


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@functools.cache
def synthetic_case(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth and prediction of case i, 48 x 48 x 20 voxels (made once per session)."""
    return case_pair((48, 48, 20), SPACING, np.random.default_rng(i))


def make_set(root: Path, n: int = 3) -> tuple[Path, Path, Path]:
    gt, pred, out = root / "gt", root / "pred", root / "out"
    gt.mkdir()
    pred.mkdir()
    for i in range(n):
        g, p = synthetic_case(i)
        save_labels(g, SPACING, gt / f"case_{i}.nii.gz")
        save_labels(p, SPACING, pred / f"case_{i}.nii.gz")
    return gt, pred, out


@pytest.mark.parametrize("year", ["flare21", "flare22"])
def test_real_ct_reproduces_official_scores(real_ct, tmp_path, year):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    shutil.copy(real_ct / f"ts_abdomen_ref_{year}.nii.gz", gt / "ts_abdomen.nii.gz")
    shutil.copy(real_ct / f"ts_abdomen_fast_{year}.nii.gz", pred / "ts_abdomen.nii.gz")
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "out"), "--rules", year,
                 "--round", "none"]) == 0
    ours = read_csv(tmp_path / "out" / "metrics.csv")
    official = read_csv(real_ct / f"official_scores_{year}.csv")  # FLARE22's with its rounding switched off
    assert list(ours[0]) == list(official[0])  # the exact official columns, in order
    for column in get_rules(year).metric_columns():
        assert float(ours[0][column]) == pytest.approx(float(official[0][column]), abs=1e-12), column

    # by default, rounded as that year's official files are (FLARE22: 4 decimals; FLARE21: not at all)
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "r4"), "--rules", year]) == 0
    rounded = read_csv(tmp_path / "r4" / "metrics.csv")[0]
    digits = get_rules(year).official_round
    assert digits == (4 if year == "flare22" else None)
    for column in get_rules(year).metric_columns():  # digit for digit, integers where official has them
        cell = official[0][column]
        value = int(cell) if cell.isdigit() else float(cell)
        if digits is None:
            assert float(rounded[column]) == pytest.approx(value, abs=1e-12), column
        else:
            assert rounded[column] == str(round(value, digits)), column


def test_synthetic_set_outputs(tmp_path, capsys):
    gt, pred, out = make_set(tmp_path)
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--workers", "1"]) == 0
    rows = read_csv(out / "metrics.csv")
    assert [r["Name"] for r in rows] == ["case_0.nii.gz", "case_1.nii.gz", "case_2.nii.gz"]
    assert list(rows[0]) == ["Name", "DSC_1", "NSD-1mm_1", "DSC_2", "NSD-1mm_2", "DSC_3", "NSD-1mm_3",
                             "DSC_4", "NSD-1mm_4"]
    liver = [float(r["DSC_1"]) for r in rows]
    assert all(0.8 < v < 1 for v in liver)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 3 and summary["problems"] == []
    assert summary["organs"]["liver"]["DSC"]["mean"] == pytest.approx(np.mean(liver), abs=1e-15)
    assert summary["organs"]["liver"]["DSC"]["min"] == pytest.approx(min(liver), abs=1e-15)
    organ_means = [summary["organs"][o]["NSD"]["mean"] for o in ("liver", "kidney", "spleen", "pancreas")]
    assert summary["mean_over_organs"]["NSD"] == pytest.approx(np.mean(organ_means))
    assert "liver" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left

    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "w2"), "--workers", "2"]) == 0
    assert read_csv(tmp_path / "w2" / "metrics.csv") == rows


def test_flare23_columns_and_lesion_outside_organ_mean(tmp_path):
    gt, pred, out = make_set(tmp_path, n=1)
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--rules", "flare23"]) == 0
    columns = list(read_csv(out / "metrics.csv")[0])
    assert columns[1] == "Liver_DSC" and columns[14] == "Tumor_DSC" and columns[-1] == "Tumor_NSD"
    summary = json.loads((out / "summary.json").read_text())
    means = [summary["organs"][o.name]["DSC"]["mean"] for o in get_rules("flare23").organs if o.in_mean]
    assert len(means) == 13
    assert summary["mean_over_organs"]["DSC"] == pytest.approx(np.mean(means))


def _killed_on_case_1(original, gt_file, *args):
    """score_files, except that the process scoring case_1 is killed (as for lack of memory)."""
    if gt_file.name == "case_1.nii.gz":
        os.kill(os.getpid(), signal.SIGKILL)
    return original(gt_file, *args)


def test_a_worker_killed_on_one_case_costs_only_that_case(tmp_path, monkeypatch, capsys):
    """A dead worker breaks the process pool and every case it had not returned: those are scored
    again one at a time, so only the case that kills its process goes unscored."""
    gt, pred, out = make_set(tmp_path, n=6)
    from evaluation import score
    monkeypatch.setattr(score, "score_files", functools.partial(_killed_on_case_1, score.score_files))
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--workers", "2"]) == 1
    rows = {r["Name"]: r for r in read_csv(out / "metrics.csv")}
    assert [name for name, row in rows.items() if row["DSC_1"] == ""] == ["case_1.nii.gz"]
    problems = json.loads((out / "summary.json").read_text())["problems"]
    assert [p["case"] for p in problems] == ["case_1.nii.gz"] and "process died" in problems[0]["problem"]


def test_bad_cases_are_reported_and_the_rest_scored(tmp_path, capsys):
    gt, pred, out = make_set(tmp_path, n=8)
    (pred / "case_0.nii.gz").unlink()  # missing
    (pred / "case_1.nii.gz").write_bytes(b"\x1f\x8b not really gzip")  # corrupt
    save_labels(np.zeros((10, 10, 10), np.uint8), SPACING, pred / "case_2.nii.gz")  # wrong shape
    nib.save(nib.Nifti1Image(np.zeros((48, 48), np.uint8), np.eye(4)), str(pred / "case_3.nii.gz"))  # 2D
    labels = np.asarray(nib.load(gt / "case_4.nii.gz").dataobj).copy()
    labels[0, 0, 0] = 9
    save_labels(labels, SPACING, pred / "case_4.nii.gz")  # a label outside FLARE21
    moved = nib.load(pred / "case_5.nii.gz")
    affine = moved.affine.copy()
    affine[:3, 3] += 5.0  # origin moved by 5 mm
    nib.save(nib.Nifti1Image(np.asarray(moved.dataobj), affine), str(pred / "case_5.nii.gz"))
    (gt / "case_6.nii.gz").write_bytes(b"garbage")  # unreadable ground truth
    save_labels(np.zeros((4, 4, 4), np.uint8), SPACING, pred / "stray.nii.gz")
    (pred / "notes.txt").write_text("not an image")

    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--workers", "2"]) == 1
    rows = {r["Name"]: r for r in read_csv(out / "metrics.csv")}
    assert len(rows) == 8
    for name in ("case_0", "case_1", "case_2", "case_3"):  # scored as empty predictions
        assert float(rows[f"{name}.nii.gz"]["DSC_1"]) == 0.0
    assert 0.8 < float(rows["case_4.nii.gz"]["DSC_1"]) <= 1.0  # scored; label 9 ignored
    assert 0.8 < float(rows["case_5.nii.gz"]["DSC_1"]) <= 1.0  # affine only warns
    assert rows["case_6.nii.gz"]["DSC_1"] == ""  # ground truth unreadable: not scored (NaN)
    assert 0.8 < float(rows["case_7.nii.gz"]["DSC_1"]) <= 1.0

    summary = json.loads((out / "summary.json").read_text())
    problems = {p["case"]: p["problem"] for p in summary["problems"]}
    assert set(problems) == {f"case_{i}.nii.gz" for i in range(7) if i != 5}
    assert "missing" in problems["case_0.nii.gz"]
    assert "unreadable" in problems["case_1.nii.gz"]
    assert "shape" in problems["case_2.nii.gz"]
    assert "shape (48, 48, 1) differs" in problems["case_3.nii.gz"]  # a 2D file is one slice
    assert "[9]" in problems["case_4.nii.gz"]
    assert "ground truth" in problems["case_6.nii.gz"]
    warnings = {w["case"]: w["warning"] for w in summary["warnings"]}
    assert "affine" in warnings["case_5.nii.gz"] and "no ground truth" in warnings["stray.nii.gz"]
    err = capsys.readouterr().err
    assert all(f"case_{i}.nii.gz" in err for i in (0, 1, 2, 3, 4, 6))
    assert summary["organs"]["liver"]["DSC"]["n"] == 7  # the NaN row is left out of the statistics


def test_storage_variants_are_read_as_labels(tmp_path):
    """float32 labels with float noise (0.99999994 for 1), a 4D file with one volume, and labels
    stored with a scale factor."""
    gt, pred, out = make_set(tmp_path, n=3)
    images = [nib.load(pred / f"case_{i}.nii.gz") for i in range(3)]
    labels = [np.asarray(img.dataobj) for img in images]
    noisy = labels[0].astype(np.float32) * np.float32(0.99999994)
    assert not (noisy == np.round(noisy)).all()
    nib.save(nib.Nifti1Image(noisy, images[0].affine), str(pred / "case_0.nii.gz"))
    nib.save(nib.Nifti1Image(labels[1].astype(np.int16)[..., None], images[1].affine), str(pred / "case_1.nii.gz"))
    halved = nib.Nifti1Image((labels[2] // 2).astype(np.uint8), images[2].affine)
    halved.header.set_slope_inter(2.0, 0.0)  # stored 0, 1, 2 mean labels 0, 2, 4
    nib.save(halved, str(pred / "case_2.nii.gz"))
    save_labels((labels[2] // 2) * 2, SPACING, gt / "case_2.nii.gz")

    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--workers", "1"]) == 0
    rows = read_csv(out / "metrics.csv")
    assert 0.8 < float(rows[0]["DSC_1"]) < 1 and float(rows[0]["DSC_4"]) > 0.5  # rounded, not truncated to 0 and 3
    assert 0.8 < float(rows[1]["DSC_1"]) < 1
    assert [float(rows[2][f"DSC_{k}"]) for k in (1, 2, 3, 4)] == [1.0, 1.0, 1.0, 1.0]


def test_non_integer_labels_are_a_problem(tmp_path):
    gt, pred, out = make_set(tmp_path, n=1)
    img = nib.load(pred / "case_0.nii.gz")
    data = np.asarray(img.dataobj).astype(np.float32)
    data[0, 0, 0] = 0.5
    nib.save(nib.Nifti1Image(data, img.affine), str(pred / "case_0.nii.gz"))
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out)]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert "whole numbers" in summary["problems"][0]["problem"]


def test_usage_errors_exit_2(tmp_path, capsys):
    gt, pred, out = make_set(tmp_path, n=1)
    for argv in (["--gt", str(tmp_path / "nope"), "--pred", str(pred), "--out", str(out)],
                 ["--gt", str(out), "--pred", str(pred), "--out", str(out)],
                 ["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--rules", "flare99"],
                 ["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--workers", "0"]):
        (tmp_path / "out").mkdir(exist_ok=True)
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "not a folder" in capsys.readouterr().err


def test_two_ground_truth_files_of_one_case_are_refused(tmp_path, capsys):
    """case_0.nii beside case_0.nii.gz would score the one prediction twice: exit 2, both named."""
    gt, pred, out = make_set(tmp_path, n=1)
    img = nib.load(gt / "case_0.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), str(gt / "case_0.nii"))
    with pytest.raises(SystemExit) as exc:
        main(["--gt", str(gt), "--pred", str(pred), "--out", str(out)])
    assert exc.value.code == 2
    assert "case_0.nii and case_0.nii.gz are one case" in capsys.readouterr().err
    assert not (out / "metrics.csv").exists()


def test_upper_case_nifti_names_are_named_not_skipped_silently(tmp_path, capsys):
    """The organisers' scripts read only lower-case .nii.gz names, and so does the scorer; a ground
    truth or prediction named CASE.NII.GZ is warned about, never left out without a word."""
    gt, pred, out = make_set(tmp_path, n=2)
    (gt / "case_1.nii.gz").rename(gt / "CASE_1.NII.GZ")
    (pred / "case_0.nii.gz").rename(pred / "case_0.NII")
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--workers", "1"]) == 1  # case_0 missing
    summary = json.loads((out / "summary.json").read_text())
    assert [row["Name"] for row in read_csv(out / "metrics.csv")] == ["case_0.nii.gz"]
    assert "missing" in summary["problems"][0]["problem"]
    miscased = {w["case"] for w in summary["warnings"] if w["warning"] == MISCASED}
    assert miscased == {str(gt / "CASE_1.NII.GZ"), str(pred / "case_0.NII")}
    assert "CASE_1.NII.GZ: not read: NIfTI names end in lower-case" in capsys.readouterr().err

    (gt / "case_0.nii.gz").rename(gt / "CASE_0.NII.GZ")  # none left to score: exit 2, the files named
    with pytest.raises(SystemExit) as exc:
        main(["--gt", str(gt), "--pred", str(pred), "--out", str(out)])
    assert exc.value.code == 2
    assert f"no .nii.gz or .nii files (CASE_0.NII.GZ, CASE_1.NII.GZ: {MISCASED})" in capsys.readouterr().err


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    target.write_text("old complete file\n")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError) as exc:
        files.write_atomic(target, "new half")
    assert exc.value.filename == str(target)  # the file meant, for the one-line error
    assert target.read_text() == "old complete file\n"
    assert list(tmp_path.iterdir()) == [target]


def test_a_result_file_that_cannot_be_written_is_one_line_and_exit_1(tmp_path):
    """(a full disk likewise): the error names the file, no traceback; the files written stay."""
    gt, pred, out = make_set(tmp_path, n=1)
    (out / "summary.json").mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "evaluation.score", "--gt", str(gt), "--pred", str(pred), "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: {out / 'summary.json'}: Is a directory"
    assert (out / "metrics.csv").is_file()


def test_result_files_get_ordinary_permissions(tmp_path):
    """Results are for others to read (an organiser's colleagues, a container's host user)."""
    mask = os.umask(0o022)
    try:
        files.write_atomic(tmp_path / "metrics.csv", "Name\n")
    finally:
        os.umask(mask)
    assert (tmp_path / "metrics.csv").stat().st_mode & 0o777 == 0o644


def test_nan_is_an_empty_cell():
    text = report.csv_text([{"Name": "a", "x": math.nan, "y": 0.5}], ["Name", "x", "y"])
    assert text == "Name,x,y\na,,0.5\n"


def test_summary_statistics_skip_nan_and_take_numpys_median():
    for values in ([0.9, math.nan, 0.5, 0.7], [0.9, 0.2, math.nan, 0.5, 0.7], [0.3]):
        finite = [v for v in values if not math.isnan(v)]
        got = report.stats(values)
        assert got["median"] == np.median(finite) and got["n"] == len(finite) and got["min"] == min(finite)
    assert report.stats([math.nan])["n"] == 0 and math.isnan(report.stats([])["median"])


def test_a_piped_run_prints_its_whole_summary_and_says_how_it_ended(tmp_path):
    """The scorer ends without the interpreter's teardown: what it printed still all arrives, and
    its exit code still says whether a case had a problem."""
    gt, pred, out = make_set(tmp_path, n=2)
    command = [sys.executable, "-m", "evaluation.score", "--gt", str(gt), "--pred", str(pred), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("2 case(s) scored; 0 with problems")
    assert len(read_csv(out / "metrics.csv")) == 2
    (pred / "case_1.nii.gz").write_bytes(b"not a NIfTI file")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("problem: case_1.nii.gz:")


def test_an_internal_failure_stops_only_its_case(tmp_path, monkeypatch):
    gt, pred, out = make_set(tmp_path, n=3)
    import evaluation.score as score_module

    real = score_module.score_runs

    def fails_on_second(gt_data, *args):
        if fails_on_second.calls == 1:
            fails_on_second.calls += 1
            raise MemoryError("simulated")
        fails_on_second.calls += 1
        return real(gt_data, *args)

    fails_on_second.calls = 0
    monkeypatch.setattr(score_module, "score_runs", fails_on_second)
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--workers", "1"]) == 1
    rows = read_csv(out / "metrics.csv")
    assert rows[1]["DSC_1"] == "" and float(rows[0]["DSC_1"]) > 0.8 and float(rows[2]["DSC_1"]) > 0.8
    problems = json.loads((out / "summary.json").read_text())["problems"]
    assert problems == [{"case": "case_1.nii.gz", "problem": "scoring failed (MemoryError: simulated): not scored"}]


def test_evaluation_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, evaluation.score, evaluation.metrics, evaluation.surface, evaluation.synthetic, "
            "evaluation.report, evaluation.imageio, evaluation.rules, evaluation.run, evaluation.rank, "
            "evaluation.compare, evaluation.efficiency, evaluation.contain, evaluation.baseline, evaluation.pages, "
            "evaluation.report_page; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_a_likely_wrong_rules_year_is_warned_about(tmp_path, capsys):
    """FLARE21 ground truth (labels 1-4) scored as FLARE22: nine organs absent from both files
    score 1.0 and lift the mean; the scorer says so and names the year that fits."""
    gt, pred, out = make_set(tmp_path, n=2)
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--workers", "1", "--rules", "flare22"]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "wrong --rules" in line]
    assert len(warning) == 1 and "--rules flare21" in warning[0] and "9 of the flare22 organs" in warning[0], err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warnings"][0]["case"] == "all cases" and "--rules flare21" in summary["warnings"][0]["warning"]
    assert summary["mean_over_organs"]["DSC"] > 0.7  # what the warning is about: the absent organs' 1.0

    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "right"), "--workers", "1"]) == 0
    assert "wrong --rules" not in capsys.readouterr().err


def test_rules_mismatch_only_when_another_year_fits_better():
    from evaluation.rules import RULES
    from evaluation.score import rules_mismatch

    flare22_labels = set(range(1, 14))
    assert rules_mismatch({1, 2, 3, 4}, RULES["flare22"]) is not None
    assert rules_mismatch({1, 2, 3, 4}, RULES["flare21"]) is None
    assert rules_mismatch({1}, RULES["flare21"]) is None  # a liver-only set: FLARE21 still fits best
    assert rules_mismatch(flare22_labels, RULES["flare23"]) is None  # no lesion: not counted in the mean
    assert rules_mismatch(flare22_labels - {7, 8}, RULES["flare22"]) is None  # no adrenals: nothing fits better
    assert rules_mismatch(set(), RULES["flare22"]) is None
    assert rules_mismatch({1, 2, 3, 4, 9}, RULES["flare21"]) is None  # a stray label: flare22 would miss 8 organs
    unknown = rules_mismatch(flare22_labels, RULES["flare21"])  # says why, and no empty list of absent organs
    assert "5, 6, 7, 8, 9, 10, 11, 12, 13 are not flare21 labels (ignored)" in unknown and "()" not in unknown
    assert "--rules flare22" in unknown
    assert rules_mismatch({1, 2, 3, 13, 14}, RULES["flare23"]) is None  # partly labelled: flare21 would drop 13, 14
    assert "fit --rules flare23" in rules_mismatch({1, 5, 6, 14}, RULES["flare22"])  # a lesion: FLARE23, not 21


def test_per_case_values_are_rounded_as_numpy_rounds_like_the_official_scripts(tmp_path):
    """The official scripts round a NumPy float64 (NumPy's rounding): on the tie 0.06425 that gives
    0.0642, where Python's round of a float gives 0.0643."""
    from evaluation.report import official_round
    from evaluation.score import CaseResult, metrics_rows

    assert round(0.06425, 4) == 0.0643 and official_round(0.06425, 4) == round(np.float64(0.06425), 4) == 0.0642
    columns = get_rules("flare22").metric_columns()
    result = CaseResult("x.nii.gz", dict.fromkeys(columns, 1))
    result.values["Liver_DSC"] = 2 * 257 / 8000  # a liver of 4000 voxels, predicted with 257 of them
    assert metrics_rows([result], columns, 4)[0]["Liver_DSC"] == 0.0642
    assert metrics_rows([result], columns, None)[0]["Liver_DSC"] == 0.06425


def test_hidden_files_are_no_predictions_and_two_predictions_of_a_case_are_warned_about(tmp_path, capsys):
    gt, pred, out = make_set(tmp_path, n=2)
    (pred / "._case_0.nii.gz").write_bytes(b"\x00\x05\x16\x07")  # what macOS writes beside a file
    (pred / "._stray.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    g, _ = synthetic_case(1)
    save_labels(g, SPACING, pred / "case_1.nii")  # a second prediction of case_1, perfect: not scored
    assert main(["--gt", str(gt), "--pred", str(pred), "--out", str(out), "--workers", "1"]) == 0
    warnings = json.loads((out / "summary.json").read_text())["warnings"]
    assert [w for w in warnings if "no ground truth" in w["warning"]] == []
    assert warnings == [{"case": "case_1.nii.gz", "warning": "predictions case_1.nii.gz, case_1.nii all exist: "
                                                             "case_1.nii.gz scored, the other ignored"}]
    assert float(read_csv(out / "metrics.csv")[1]["DSC_1"]) < 1.0  # the one of the ground truth's name
    assert "case_1.nii.gz scored, the other ignored" in capsys.readouterr().err


def test_flare23_s_official_scores_round_each_mean_then_average_the_rounded_organ_means():
    """FLARE23's scores.txt: each column's mean rounded to 4 decimals, Organ_DSC the rounded mean
    of those rounded means (the lesion left out): two cases at DSC 0.0001 and 0 give 0.0, where the
    unrounded mean over organs is 5e-05."""
    rules = get_rules("flare23")
    metrics = [{"Name": f"c{i}", **{column: (0.0001 if i == 0 else 0.0) if "DSC" in column else 0.5
                                      for column in rules.metric_columns()}} for i in range(2)]
    doc = json.loads(report.summary_json(report.summarise(metrics, rules), rules, 2, [], []))
    official = doc["official_scores"]
    assert official["Liver_DSC"] == 0.0 and official["Organ_DSC"] == 0.0 and official["Organ_NSD"] == 0.5
    assert doc["mean_over_organs"]["DSC"] == pytest.approx(5e-05)
    assert "Tumor_DSC" in official and "official_scores" not in json.loads(
        report.summary_json(report.summarise(metrics[:0], get_rules("flare22")), get_rules("flare22"), 0, [], []))
