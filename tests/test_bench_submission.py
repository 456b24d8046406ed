"""The submission benchmark runs end to end and its figures hold together (never timed here)."""
import json
import math

import nibabel as nib
import numpy as np
import pytest

from bench import bench_submission, record, yardstick
from bench.stamp import stamp_of
from inference.checkpoint import load
from inference.pipeline import STAGES


def test_benchmark_times_each_stage_of_each_case_and_writes_its_section(tmp_path, weights, monkeypatch, capsys):
    monkeypatch.setattr(bench_submission, "PAPER_SIZES", {"coarse": (32, 32, 16), "fine": (32, 32, 16)})
    # the warm runs' heap is recorded without changing the test process's own
    monkeypatch.setattr(bench_submission, "keep_freed_memory", lambda: True)
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nkept\n")
    monkeypatch.setattr(record, "DOCS", docs)
    out = tmp_path / "bench"
    code = bench_submission.main(["--weights", str(weights), "--sizes", "32", "48", "--shapes", "64x56x24",
                                  "--real", "--precision", "bf16", "--backend", "torch", "--repeats", "1",
                                  "--cold-runs", "2", "--out", str(out), "--write-docs"])
    assert code == 0
    result = json.loads((out / "bench_submission.json").read_text())
    assert result["sizes"] == {"coarse": "32x32x32", "fine": "48x48x48"}
    assert load(out / "weights.pt").fine.config.input_size == (48, 48, 48)
    (cold,), (warm,) = result["cold"], result["warm"]
    assert cold["shape"] == [64, 56, 24] and cold["peak_rss_mb"] > 0
    assert len(cold["wall_runs_s"]) == 2 and cold["wall_s"] == min(cold["wall_runs_s"])  # the median's lower run
    parts = {k: cold["seconds"][k] for k in (*bench_submission.STARTUP, *bench_submission.CASE_STAGES)}
    assert all(v >= 0 for v in parts.values())
    assert sum(parts.values()) <= cold["wall_s"]  # the parts of one process's wall time
    assert set(warm["seconds"]) == set(STAGES)
    assert set(warm["dsc_vs_fp32"]) == {"liver", "kidney", "spleen", "pancreas"}  # bf16 against fp32
    text = docs.read_text()
    assert "kept" in text and "<!-- submission-cpu-torch:start -->" in text and "phantom_64x56x24_0000.nii.gz" in text
    assert str(out) not in text and "--write-docs" in text  # the command, without the work folder
    assert str(weights) not in text and weights.name in text  # nor the weights' folder
    assert "Yardstick" in capsys.readouterr().out

    # the yardstick under both heaps, each in its own process; the ratios use the faster
    by_heap = result["yardstick_by_heap_s"]
    assert "system" in by_heap and set(by_heap) <= {"system", "kept"}
    faster = min(by_heap, key=lambda heap: by_heap[heap]["both"])
    assert result["yardstick_heap"] == faster and result["yardstick_s"] == by_heap[faster]
    assert result["yardstick_sizes"] == {"coarse": "32x32x16", "fine": "32x32x16"}
    assert "/ yardstick (faster heap)" in text and "--heap system" in text
    assert f"| {cold['wall_s']:.2f} | {cold['ratio']:.2f} |" in text
    # the yardstick measured before each round of cold runs; each run's ratio to its own round's
    rounds = [r[faster] for r in result["yardstick_rounds_s"]]
    assert len(rounds) == 2 and by_heap[faster]["both"] == min(rounds)  # the median's lower round
    assert cold["ratio_runs"] == [w / y for w, y in zip(cold["wall_runs_s"], rounds)]
    assert cold["ratio"] == min(cold["ratio_runs"])
    # the heaps that ran: predict's --heap auto in the cold runs (its report), the same in the warm runs
    assert cold["heap"] == "kept" and result["heap"] == "kept" and cold["machine"]
    assert ("OpenVINO " if result["openvino"] else "no OpenVINO") in text and "ISA-L" in text


def test_the_faster_heap_is_the_yardstick_and_a_bad_heap_is_refused(capsys):
    assert yardstick.faster_heap({"system": {"both": 2.0}, "kept": {"both": 1.0}}) == "kept"
    assert yardstick.faster_heap({"system": {"both": 2.0}}) == "system"  # where the kept heap could not be set
    with pytest.raises(SystemExit) as exit_:
        yardstick.main(["jemalloc", "32x32x32", "32x32x32"])
    assert exit_.value.code == 2 and "jemalloc" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--shapes", "512x512"], ["--shapes", "axbxc"], ["--shapes", "8x512x512"],
                                  ["--sizes", "160", "200"], ["--sizes", "160"], ["--sizes", "abc"],
                                  ["--repeats", "0"], ["--real", "no-such-ct.nii.gz"],
                                  ["--weights", "no-such-weights.pt"]])
def test_bad_arguments_are_refused_in_one_line(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench_submission.main(args)
    assert exit_.value.code == 2 and args[-1] in capsys.readouterr().err


def test_a_docs_section_without_its_end_marker_is_refused_before_anything_is_measured(tmp_path, monkeypatch, capsys):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n<!-- submission-cpu-torch:start -->\nold\n")
    monkeypatch.setattr(record, "DOCS", docs)
    monkeypatch.setattr(bench_submission, "measure", lambda *_: pytest.fail("measured before the docs were checked"))
    with pytest.raises(SystemExit) as exit_:
        bench_submission.main(["--real", "--out", str(tmp_path / "out"), "--write-docs"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "<!-- submission-cpu-torch:end -->" in err


def test_a_kept_phantom_is_the_same_whatever_its_place_in_shapes_and_is_remade_when_its_stamp_differs(tmp_path):
    first = bench_submission.make_inputs(tmp_path / "a", [(48, 48, 24), (64, 64, 24)], [])
    (second,) = bench_submission.make_inputs(tmp_path / "b", [(64, 64, 24)], [])
    assert first[1].name == second.name
    voxels = np.asarray(nib.load(second).dataobj)
    assert np.array_equal(np.asarray(nib.load(first[1]).dataobj), voxels)
    stamp = stamp_of(second)
    stamp.write_text(stamp.read_text().replace('"seed": 0', '"seed": 7'))  # made from something else
    second.write_bytes(b"not this phantom")
    bench_submission.make_inputs(tmp_path / "b", [(64, 64, 24)], [])
    assert np.array_equal(np.asarray(nib.load(second).dataobj), voxels)


def test_the_lowest_dsc_leaves_out_organs_in_neither_label_map_whatever_their_order():
    assert bench_submission.lowest_dsc({"liver": math.nan, "kidney": 0.97, "spleen": 0.99}) == 0.97
    assert bench_submission.lowest_dsc({"kidney": 0.97, "spleen": 0.99, "liver": math.nan}) == 0.97
    assert bench_submission.lowest_dsc({"liver": math.nan}) is None


def test_recorded_arguments_leave_out_the_work_folder_and_absolute_paths():
    assert bench_submission.recorded_arguments(["--out", "/w/x", "--weights", "/w/mine.pt", "--shapes", "64x64x32",
                                                "--real", "ct.nii.gz", "--out=/w/y"]) == [
        "--weights", "mine.pt", "--shapes", "64x64x32", "--real", "ct.nii.gz"]
