"""The sliding-window baseline of the benchmark tiles, weights and averages as nnU-Net does (never timed here)."""
import json

import numpy as np
import pytest
from scipy.special import expit

from bench import bench_sliding_window as sw
from bench import record


@pytest.mark.parametrize("size,window,overlap", [(192, 192, 0.5), (300, 192, 0.5), (315, 192, 0.5),
                                                 (1000, 64, 0.5), (100, 32, 0.25), (97, 96, 0.0)])
def test_windows_cover_the_axis_evenly_with_at_least_the_overlap_asked(size, window, overlap):
    starts = sw.window_starts(size, window, overlap)
    assert starts[0] == 0 and starts[-1] + window == size
    steps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(0 < s <= window * (1 - overlap) + 1 for s in steps)  # +1: rounding to whole voxels
    assert max(steps, default=0) - min(steps, default=0) <= 1
    if len(starts) > 2:  # as few as possible: one window fewer would overlap too little
        assert (size - window) / (len(starts) - 2) > window * (1 - overlap)


def test_a_side_shorter_than_the_window_is_refused():
    with pytest.raises(ValueError, match="smaller than the window"):
        sw.window_starts(100, 192, 0.5)


def test_gaussian_is_one_at_the_centre_symmetric_and_positive_at_the_edges():
    weights = sw.gaussian_weights((16, 12, 9))
    assert weights.shape == (16, 12, 9) and weights.dtype == np.float32 and float(weights.max()) == pytest.approx(1.0)
    assert np.array_equal(weights, np.flip(weights, 0)) and np.array_equal(weights, np.flip(weights, 2))
    assert float(weights.min()) > 0
    assert float(weights[0, 0, 0]) < float(weights[8, 6, 4])


def test_weighted_average_of_a_translation_equivariant_network_is_the_network_on_the_whole_volume():
    """A voxel-wise network gives every window the same values where they overlap: the weighted
    mean must return exactly those values, the padding cut off again."""
    volume = np.random.default_rng(0).standard_normal((40, 23, 30), dtype=np.float32)

    def network(x: np.ndarray) -> np.ndarray:
        assert x.shape == (16, 24, 16) and x.dtype == np.float32  # always one window's size
        return np.stack([x, -x]) * 2

    mean = sw.sliding_window_probabilities(volume, network, (16, 24, 16), 0.5, pad_value=-3.0)
    assert mean.shape == (2, 40, 23, 30) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, expit(np.stack([volume, -volume]) * 2), rtol=1e-5, atol=1e-6)


def test_benchmark_runs_both_methods_and_writes_its_section(tmp_path, weights, monkeypatch, capsys):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n")
    monkeypatch.setattr(record, "DOCS", docs)
    out = tmp_path / "sw"
    assert sw.main(["--weights", str(weights), "--sizes", "32", "32", "--shape", "80x72x40", "--backend", "torch",
                    "--out", str(out), "--write-docs"]) == 0
    result = json.loads((out / "bench_sliding_window.json").read_text())
    c2f, window = result["runs"]
    assert (c2f["method"], window["method"]) == sw.METHODS
    assert all(r["seconds"] > 0 and r["peak_rss_mb"] > 0 for r in result["runs"])
    assert set(window["parts"]) == {"resample and normalise", "windows", "labels back"}
    assert result["windows"] >= 1 and len(result["window_grid"]) == 3
    assert set(result["agreement"]) == {"between", *sw.METHODS}  # a phantom has its ground truth
    assert "<!-- sliding-window-cpu-torch:start -->" in docs.read_text()
    assert "Sliding window / coarse-to-fine" in capsys.readouterr().out
    assert all(r["peak_rss_before_mb"] > 0 for r in result["runs"])


def test_a_peak_reached_before_the_method_ran_is_marked_as_not_its_own():
    assert sw.peak_rss({"peak_rss_mb": 900.0, "peak_rss_before_mb": 500.0}) == "900"
    assert sw.peak_rss({"peak_rss_mb": 900.0, "peak_rss_before_mb": 900.0}).startswith("900 (reached while loading")
