"""The scorer's benchmark: each command timed on its own, medians over runs taking turns, and the
scorer's numbers checked against the organisers' loop."""
import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("surface_distance", reason="surface-distance is in requirements-dev.txt")

from bench.bench_score import main, make_cases  # noqa: E402


def test_bench_score_reports_medians_and_the_same_numbers_as_the_official_loop(tmp_path, capsys):
    assert main(["--cases", "1", "--shape", "64", "64", "32", "--spacing", "2", "2", "3", "--quality", "good",
                 "--workers", "2", "--repeats", "2", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "medians of 2 runs each" in out and "flags:" in out  # the CPU model and its flags
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| good")]
    header = next(line for line in out.splitlines() if line.startswith("| quality")).split("|")[1:-1]
    table = [dict(zip((h.strip() for h in header), (c.strip() for c in row))) for row in rows]
    assert [r["run"] for r in table] == ["official loop (surface-distance)", "evaluation.score --workers 1",
                                         "evaluation.score --workers 2"]
    for row in table:
        low, high = (float(v) for v in row["range_s"].split("-"))
        assert low <= float(row["seconds"]) <= high and float(row["peak_MB"]) > 0
        assert float(row["max_abs_diff"]) < 1e-9


def labels(path):
    return np.asarray(nib.load(path).dataobj)


def test_kept_cases_are_drawn_by_their_index_and_each_run_has_exactly_its_cases(tmp_path):
    folder = tmp_path / "good"
    make_cases(folder, 1, (48, 48, 24), (3.0, 3.0, 4.0), "good")
    first = labels(folder / "gt" / "case_000.nii.gz")
    make_cases(folder, 2, (48, 48, 24), (3.0, 3.0, 4.0), "good")  # case_001 made in a later run
    assert sorted(p.name for p in (folder / "gt").iterdir()) == ["case_000.nii.gz", "case_001.nii.gz"]
    assert np.array_equal(labels(folder / "gt" / "case_000.nii.gz"), first)
    assert not np.array_equal(labels(folder / "gt" / "case_001.nii.gz"), first)
    elsewhere = tmp_path / "elsewhere"
    make_cases(elsewhere, 2, (48, 48, 24), (3.0, 3.0, 4.0), "good")  # made in one run: the same cases
    assert np.array_equal(labels(elsewhere / "gt" / "case_001.nii.gz"), labels(folder / "gt" / "case_001.nii.gz"))
    make_cases(folder, 1, (48, 48, 24), (3.0, 3.0, 4.0), "good")  # fewer cases: the others are not scored
    assert [p.name for p in (folder / "gt").iterdir()] == ["case_000.nii.gz"]
    assert [p.name for p in (folder / "pred").iterdir()] == ["case_000.nii.gz"]
    make_cases(folder, 1, (40, 48, 24), (3.0, 3.0, 4.0), "good")  # another shape: made again
    assert labels(folder / "gt" / "case_000.nii.gz").shape == (40, 48, 24)


@pytest.mark.parametrize("args", [["--repeats", "0"], ["--cases", "0"], ["--workers", "0"]])
def test_bad_counts_are_refused_in_one_line(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and "must be at least 1" in capsys.readouterr().err
