"""Pieces of the pipeline: orientation, naming, boxes, components, normalisation, checkpoints."""
import dataclasses
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from flare_common.errors import InputError
from flare_common.nifti import output_name
from inference.checkpoint import UNTRAINED, CheckpointError, average, combine, load, main, random_models, save
from inference.imageio import read_ct, to_canonical, unit_problem
from inference.postprocessing import (
    Postprocessing,
    keep_largest_components,
    labels_at_size,
    logits_to_labels,
    organ_box,
    organ_region,
)
from inference.preprocessing import Normalisation, edge_padded, resize

NAMES = {1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}


def test_output_names():
    assert output_name(Path("train_000_0000.nii.gz")) == "train_000.nii.gz"
    assert output_name(Path("FLARE22_Tr_0001_0000.nii")) == "FLARE22_Tr_0001.nii.gz"
    assert output_name(Path("scan.nii.gz")) == "scan.nii.gz"
    assert output_name(Path("scan_0001.nii.gz")) == "scan_0001.nii.gz"


AFFINES = {
    "RAS": np.diag([0.8, 0.9, 2.5, 1.0]),
    "LPS": np.diag([-0.8, -0.9, 2.5, 1.0]),
    "permuted": np.array([[0, 0, 2.5, 0], [0.8, 0, 0, 0], [0, -0.9, 0, 0], [0, 0, 0, 1.0]]),
    "oblique": np.array([[0.8 * np.cos(0.1), -0.9 * np.sin(0.1), 0, 3], [0.8 * np.sin(0.1), 0.9 * np.cos(0.1), 0, 4],
                         [0, 0, -2.5, 5], [0, 0, 0, 1.0]]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_read_ct_reorients_like_nibabel_and_maps_back(tmp_path, name):
    data = np.random.default_rng(0).normal(0, 100, (7, 8, 9)).astype(np.int16)
    img = nib.Nifti1Image(data, AFFINES[name])
    nib.save(img, str(tmp_path / "ct.nii.gz"))
    ct = read_ct(tmp_path / "ct.nii.gz")
    canonical = nib.as_closest_canonical(img)
    np.testing.assert_array_equal(ct.data, canonical.get_fdata().astype(np.float32))
    np.testing.assert_allclose(ct.spacing, canonical.header.get_zooms(), rtol=1e-6)
    np.testing.assert_array_equal(ct.from_canonical(ct.data), data.astype(np.float32))


def test_read_ct_repairs_non_finite_voxels_and_refuses_bad_files(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    ct = read_ct(tmp_path / "nan.nii.gz")
    assert np.isfinite(ct.data).all() and "3 NaN/inf voxels" in ct.warnings[0]

    nib.save(nib.Nifti1Image(np.zeros(4, np.int16), np.eye(4)), str(tmp_path / "flat.nii.gz"))  # a line (2D: a slice)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), str(tmp_path / "series.nii.gz"))
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08garbage")
    header = nib.Nifti1Header()
    header.set_data_shape((5000, 5000, 5000))
    (tmp_path / "huge.nii").write_bytes(header.binaryblock + b"\0" * 4)  # header only: never read
    singular = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4))
    singular.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    singular.set_qform(None, code=0)
    nib.save(singular, str(tmp_path / "singular.nii.gz"))
    for name, message in [("flat", "3D"), ("series", "3D"), ("broken", "unreadable"), ("huge", "refusing"),
                          ("singular", "affine")]:
        path = next(tmp_path.glob(f"{name}.nii*"))
        with pytest.raises(InputError, match=message):
            read_ct(path)


def test_organ_box_maps_to_the_original_grid_with_margin():
    coarse = np.zeros((16, 16, 16), np.uint8)
    coarse[4:8, 6:10, 0:2] = 1
    box = organ_box(coarse, (64, 32, 160), spacing=(1.0, 2.0, 5.0), margin_mm=10)
    # x: voxels 4..7 of 16 cover 16..32 of 64, +-10 mm at 1 mm; y: 12..20 of 32, +-5 voxels;
    # z: 0..20 of 160, +-2 voxels, clipped at 0.
    assert box == (slice(6, 42), slice(7, 25), slice(0, 22))
    assert organ_box(np.zeros((4, 4, 4), np.uint8), (8, 8, 8), (1, 1, 1), 20.0) is None
    # the organs touch z = 0 (cut by the scan): the crop goes on by the margin (2 voxels) there only
    assert organ_region(coarse, (64, 32, 160), (1.0, 2.0, 5.0), 10, pad=True) == (box, ((0, 0), (0, 0), (2, 0)))
    assert organ_region(coarse, (64, 32, 160), (1.0, 2.0, 5.0), 10, pad=False) == (box, ((0, 0),) * 3)
    # within the margin of an edge but not touching it: the box clipped there, nothing past the edge
    near = np.zeros((16, 16, 16), np.uint8)
    near[1:3, 6:10, 4:6] = 1  # x from 4 of 64: 4 mm from the edge, the margin 10 mm
    wide, padding = organ_region(near, (64, 32, 160), (1.0, 2.0, 5.0), 10, pad=True)
    assert wide[0] == slice(0, 22) and padding == ((0, 0),) * 3


def test_logits_to_labels_resolves_overlaps_by_the_highest_logit():
    logits = np.array([[[[2.0, -1.0, 0.5, -3.0, 1.0]]], [[[1.0, -2.0, 3.0, -1.0, 1.0]]]])  # (organs=2, 1, 1, 5)
    labels = logits_to_labels(logits)
    assert labels.dtype == np.uint8 and labels.tolist() == [[[1, 0, 2, 0, 1]]]  # a tie: the first organ


def test_labels_at_size_equals_resampling_all_logits_at_once():
    logits = np.random.default_rng(0).standard_normal((4, 6, 5, 4), dtype=np.float32)
    logits[2, 0, 0, 0] = logits[1, 0, 0, 0] = 5.0  # a tie: the first organ wins in both
    for size in ((12, 10, 8), (7, 11, 3), (6, 5, 4)):
        expected = logits_to_labels(resize(logits, size))
        assert np.array_equal(labels_at_size(logits, size), expected)


def test_labels_at_size_on_organ_like_logits_up_and_down():
    """Smooth logits (organs as regions, most output voxels far from a boundary), resampled to
    larger and smaller sizes, uneven per axis."""
    rng = np.random.default_rng(1)
    for _ in range(12):
        logits = resize(4 * rng.standard_normal((4, 3, 4, 3), dtype=np.float32), (24, 20, 16))
        size = tuple(int(n) for n in rng.integers(5, 60, 3))
        expected = logits_to_labels(resize(logits, size))
        assert len(np.unique(expected)) > 1
        assert np.array_equal(labels_at_size(logits, size), expected), size


def test_keep_largest_components():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[1:5, 1:5, 1:5] = 1
    labels[10:12, 10:12, 10:12] = 1  # second liver piece: dropped
    labels[1:5, 10:14, 1:5] = 2
    labels[10:14, 1:5, 10:14] = 2  # two kidneys: both kept
    labels[15:18, 15:18, 15:18] = 2  # third kidney piece: dropped
    labels[17:19, 1:3, 1:3] = 3  # 8 voxels x 27 mm^3 < 1000 mm^3: dropped
    sizes_only = Postprocessing(not_above={})  # the size rules alone (the kidneys lie above this liver)
    out = keep_largest_components(labels, (3.0, 3.0, 3.0), NAMES, sizes_only)
    assert [(out == k).sum() for k in (1, 2, 3)] == [64, 128, 0]
    # the checkpoint's rules, keyed by label: three kidney pieces, one liver piece, no minimum
    out = keep_largest_components(labels, (3.0, 3.0, 3.0), NAMES, Postprocessing(0.0, {2: 3, 1: 1}, not_above={}))
    assert [(out == k).sum() for k in (1, 2, 3)] == [64, 155, 8]
    # asking for more components than there are keeps what there is, never the background
    out = keep_largest_components(labels, (3.0, 3.0, 3.0), NAMES, Postprocessing(0.0, {3: 2}, not_above={}))
    assert (out == 3).sum() == 8 and not out[labels == 0].any()


def test_components_wholly_above_the_liver_are_dropped():
    """A scan into the chest: the largest 'spleen' (the heart, say) lies wholly above the liver's
    top (z grows superior), so the smaller one beside the liver is kept instead; a kidney piece
    that reaches above the top but starts below it stays."""
    labels = np.zeros((20, 20, 40), np.uint8)
    labels[1:9, 1:9, 2:12] = 1  # liver: top at z = 11
    labels[10:18, 10:18, 20:34] = 3  # 896 voxels, lowest z 20 > 11: dropped
    labels[10:15, 1:6, 6:10] = 3  # 100 voxels beside the liver: kept
    labels[1:4, 12:15, 8:16] = 2  # kidney from z 8 up to 15: kept
    labels[5:8, 15:18, 14:20] = 2  # kidney piece wholly above: dropped
    no_minimum = Postprocessing(0.0)
    out = keep_largest_components(labels, (1.0, 1.0, 1.0), NAMES, no_minimum)
    assert [(out == k).sum() for k in (1, 2, 3)] == [640, 72, 100]
    assert out[12, 12, 25] == 0 and out[12, 3, 8] == 3
    # without the rule, or without a liver to refer to, the largest are kept as before
    plain = keep_largest_components(labels, (1.0, 1.0, 1.0), NAMES, Postprocessing(0.0, not_above={}))
    assert [(plain == k).sum() for k in (2, 3)] == [126, 896]
    no_liver = np.where(labels == 1, 0, labels)
    assert [(keep_largest_components(no_liver, (1.0, 1.0, 1.0), NAMES, no_minimum) == k).sum() for k in (2, 3)] == [126, 896]
    assert Postprocessing.from_dict(no_minimum.to_dict()) == no_minimum
    old = {"min_component_mm3": 1000, "components_kept": {"2": 2}, "box_margin_mm": 20}  # a checkpoint before the rule
    assert Postprocessing.from_dict(old) == Postprocessing() and Postprocessing().edge_padding
    paper = Postprocessing(edge_padding=False)
    assert Postprocessing.from_dict(paper.to_dict()) == paper
    with pytest.raises(ValueError, match="invalid"):
        Postprocessing.from_dict({**old, "edge_padding": "yes"})
    with pytest.raises(ValueError, match="invalid"):
        Postprocessing.from_dict({**old, "not_above": {"2": 1, "1": 3}})  # chained references


def test_normalise_and_resize():
    x = np.linspace(-1000, 1000, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    y = Normalisation((-325.0, 325.0))(x)
    assert y.dtype == np.float32 and abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1) < 1e-3
    assert x.min() == -1000  # a copy: the input stays as it was
    window = Normalisation((-100.0, 300.0), zscore=False)(x)  # the window onto [-1, 1]
    assert float(window.min()) == -1.0 and float(window.max()) == 1.0
    assert float(np.abs(Normalisation((-100.0, 300.0), zscore=False)(np.full((2, 2, 2), 100, np.int16))).max()) == 0.0
    assert resize(x, (4, 16, 8)).shape == (4, 16, 8) and resize(x[None], (4, 16, 8)).shape == (1, 4, 16, 8)
    assert resize(x, (8, 8, 8)) is x
    stored = np.arange(6 * 4 * 2, dtype=np.int16).reshape(6, 4, 2)  # int16 HU as read: resampled into float32
    assert resize(stored, (3, 4, 2)).dtype == np.float32 and np.array_equal(resize(stored, (3, 4, 2)),
                                                                           resize(stored.astype(np.float32), (3, 4, 2)))


def test_antialiased_shrinking_averages_noise_away_and_keeps_the_voxel_centres():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((256, 256, 16), dtype=np.float32)
    sampled, averaged = resize(noise, (64, 64, 32)), resize(noise, (64, 64, 32), antialias=True)
    assert averaged.shape == sampled.shape == (64, 64, 32)
    # 4x smaller in-plane: trilinear samples blend 2 x 2 voxels (sd 0.5), the blocks 16 (sd 0.25)
    assert float(averaged.std()) < 0.6 * float(sampled.std())
    ramp = np.broadcast_to(np.arange(300, dtype=np.float32)[:, None, None], (300, 2, 2))
    centres = (np.arange(70) + 0.5) * 300 / 70 - 0.5  # align_corners=False, in input voxels (blocks of 4)
    assert float(np.abs(resize(ramp, (70, 2, 2), antialias=True)[:, 0, 0] - centres).max()) < 1e-3
    growing = rng.standard_normal((6, 6, 6), dtype=np.float32)  # nothing shrinks: plain trilinear
    assert np.array_equal(resize(growing, (12, 6, 9), antialias=True), resize(growing, (12, 6, 9)))


def test_resize_is_pytorchs_trilinear_interpolation():
    """Plain: F.interpolate's trilinear (align_corners=False); anti-aliased: block means (a partial
    last block its own) sampled at the same centres, as avg_pool3d (ceil_mode) and grid_sample
    (border) give them. Equal to float32 rounding, up and down, uneven per axis."""
    rng = np.random.default_rng(2)
    for shape, size in (((17, 9, 5), (6, 4, 11)), ((30, 31, 7), (9, 10, 3)), ((8, 8, 8), (3, 20, 8))):
        volume = rng.uniform(-1000, 1000, shape).astype(np.float32)
        tensor = torch.from_numpy(volume)[None, None]
        plain = torch.nn.functional.interpolate(tensor, size=size, mode="trilinear", align_corners=False)[0, 0]
        np.testing.assert_allclose(resize(volume, size), plain.numpy(), atol=0.05)  # HU: float32 rounding
        blocks = tuple(max(1, m // n) for m, n in zip(shape, size))
        pooled = torch.nn.functional.avg_pool3d(tensor, blocks, stride=blocks, ceil_mode=True)
        axes = [torch.from_numpy(2 * (np.arange(n) + 0.5) * (m / n) / (b * p) - 1).float()
                for m, n, b, p in zip(shape, size, blocks, pooled.shape[2:])]
        x, y, z = torch.meshgrid(*axes, indexing="ij")
        sampled = torch.nn.functional.grid_sample(pooled, torch.stack([z, y, x], dim=-1)[None], mode="bilinear",
                                                  padding_mode="border", align_corners=False)[0, 0]
        np.testing.assert_allclose(resize(volume, size, antialias=True), sampled.numpy(), atol=0.05)
        for antialias in (False, True):  # NIfTI's memory order (CT.data): the same samples, laid out as the input
            fortran = resize(np.asfortranarray(volume), size, antialias)
            np.testing.assert_allclose(fortran, resize(volume, size, antialias), atol=0.05)
            assert fortran.flags.f_contiguous


def test_checkpoint_round_trip_and_errors(tmp_path, tiny_networks):
    models = random_models(**tiny_networks)
    models.normalisation["fine"] = Normalisation((-200.0, 250.0), zscore=False)
    models.post = Postprocessing(500.0, {2: 2, 4: 2}, 15.0)
    models.training = {"coarse": {"steps": 3}}
    save(tmp_path / "w.pt", models)
    loaded = load(tmp_path / "w.pt")
    assert loaded.labels == NAMES and loaded.trained_on == UNTRAINED and loaded.training["coarse"] == {"steps": 3}
    assert loaded.normalisation == {"coarse": Normalisation(), "fine": Normalisation((-200.0, 250.0), False)}
    assert loaded.post == Postprocessing(500.0, {2: 2, 4: 2}, 15.0)
    assert loaded.coarse.config == tiny_networks["coarse"] and loaded.fine.config == tiny_networks["fine"]
    for a, b in zip(loaded.fine.state_dict().values(), models.fine.state_dict().values()):
        assert torch.equal(a, b)

    with pytest.raises(CheckpointError, match="not found"):
        load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a checkpoint of this project .*; get weights: "):
        load(tmp_path / "junk.pt")
    for change, message in [
        (lambda p: p["labels"].update({"5": "stomach"}), "4 outputs for 5 labels"),
        (lambda p: p["fine"]["config"].update(widths=[8, 8, 8, 16, 16]), "do not match"),
        (lambda p: p["fine"]["state_dict"].pop("head.weight"),  # which key, not torch's title alone
         r"fine weights do not match its config \(Error\(s\) in loading state_dict for EfficientSegNet: Missing key\(s\) "
         r'in state_dict: "head.weight"'),
        (lambda p: p["fine"]["normalisation"].update(clip_hu=[300, -300]), "increasing"),
        (lambda p: p["postprocessing"]["components_kept"].update({"7": 1}), "not in"),
        (lambda p: p["postprocessing"].update(not_above={"4": 6}), r"labels \[6\] not in"),
        (lambda p: p.pop("postprocessing"), "missing or malformed"),
        (lambda p: p.pop("coarse"), "holds no coarse network"),
        (lambda p: p["fine"]["config"].update(input_size=[32, 32]), r"fine network: input size \(32, 32\)"),
        (lambda p: p["coarse"]["config"].update(input_size=[40, 40, 40]), "each a multiple of 16"),
        (lambda p: p["coarse"]["config"].update(input_size=[16, 16, 16]), "not all 16"),
        (lambda p: p["coarse"]["config"].update(in_channels=2), "2 input channels"),
        (lambda p: p["coarse"]["config"].update(widths=[-4, 8, 8, 8, 8]), "cannot be built"),
        (lambda p: p["postprocessing"].update(box_margin_mm=float("inf")), "invalid post-processing"),
        (lambda p: p["postprocessing"].update(min_component_mm3=float("nan")), "invalid post-processing"),
        (lambda p: next(iter(p["fine"]["state_dict"].values())).fill_(float("nan")), "fine weights are not all finite"),
    ]:
        payload = torch.load(tmp_path / "w.pt", weights_only=True)
        change(payload)
        torch.save(payload, tmp_path / "changed.pt")
        with pytest.raises(CheckpointError, match=message):
            load(tmp_path / "changed.pt")


def test_stage_checkpoints_combine_into_one_half_size(tmp_path, tiny_networks):
    coarse_only, fine_only = random_models(**tiny_networks, seed=1), random_models(**tiny_networks, seed=2)
    coarse_only.fine, fine_only.coarse = None, None
    save(tmp_path / "coarse.pt", coarse_only)
    save(tmp_path / "fine.pt", fine_only)
    assert load(tmp_path / "coarse.pt", stages=("coarse",)).fine is None
    with pytest.raises(CheckpointError, match="holds no fine network"):
        load(tmp_path / "coarse.pt")
    both = combine(load(tmp_path / "coarse.pt", stages=("coarse",)), load(tmp_path / "fine.pt", stages=("fine",)))
    save(tmp_path / "both.pt", both, half=True)
    save(tmp_path / "both32.pt", both)
    assert (tmp_path / "both.pt").stat().st_size < 0.6 * (tmp_path / "both32.pt").stat().st_size
    loaded = load(tmp_path / "both.pt")
    for net, original in ((loaded.coarse, coarse_only.coarse), (loaded.fine, fine_only.fine)):
        for a, b in zip(net.state_dict().values(), original.state_dict().values()):
            assert a.dtype == b.dtype and torch.allclose(a, b, rtol=1e-3, atol=1e-4)
    different = random_models(**tiny_networks)
    different.post = Postprocessing(box_margin_mm=5.0)
    with pytest.raises(CheckpointError, match=r"different post-processing \(box_margin_mm 20.0 and 5.0\): say whose "
                                              "to keep with --post-from coarse or --post-from fine"):
        combine(coarse_only, different)
    assert combine(coarse_only, different, post_from="fine").post.box_margin_mm == 5.0  # a fine stage trained for it
    assert combine(coarse_only, different, post_from="coarse").post.box_margin_mm == 20.0
    save(tmp_path / "margin.pt", different)
    assert main(["combine", "--coarse", str(tmp_path / "coarse.pt"), "--fine", str(tmp_path / "margin.pt"),
                 "-o", str(tmp_path / "margin5.pt"), "--post-from", "fine"]) == 0
    assert load(tmp_path / "margin5.pt").post.box_margin_mm == 5.0


def test_fine_networks_average_weight_by_weight_at_the_first_ones_input_size(tmp_path, tiny_networks):
    a, b = random_models(**tiny_networks, seed=1), random_models(**tiny_networks, seed=2)
    b.fine.config = dataclasses.replace(b.fine.config, input_size=(64, 64, 64))
    a.training, b.training = {"fine": {"steps": 10}}, {"fine": {"steps": 20}}
    mean = average([a, b], "fine")
    for key, value in mean.fine.state_dict().items():
        expected = (a.fine.state_dict()[key].float() + b.fine.state_dict()[key].float()) / 2
        assert torch.allclose(value.float(), expected) if value.is_floating_point() else torch.equal(value, expected.long())
    assert mean.fine.config.input_size == a.fine.config.input_size and mean.coarse is a.coarse
    assert mean.training["fine"] == {"steps": 10, "averaged_with": [{"steps": 20}]}
    assert torch.equal(next(a.fine.parameters()), next(random_models(**tiny_networks, seed=1).fine.parameters()))
    wider = random_models(coarse=tiny_networks["coarse"],
                          fine=dataclasses.replace(tiny_networks["fine"], widths=(8, 8, 8, 16, 16)))
    with pytest.raises(CheckpointError, match="differ in more than their input size"):
        average([a, wider], "fine")
    other = random_models(**tiny_networks, seed=3)  # the same network, fed inputs normalised otherwise
    other.normalisation["fine"] = dataclasses.replace(other.normalisation["fine"], zscore=False)
    with pytest.raises(CheckpointError, match="different normalisation"):
        average([a, other], "fine")
    for name, models in (("a", a), ("b", b)):
        save(tmp_path / f"{name}.pt", models)
    assert main(["combine", "--coarse", str(tmp_path / "a.pt"), "--fine", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
                 "-o", str(tmp_path / "mean.pt")]) == 0
    assert torch.allclose(next(load(tmp_path / "mean.pt").fine.parameters()), next(mean.fine.parameters()))


class _Exploit:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path, capsys):
    """Refused without running its code, and without torch's advice to load it unsafely."""
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "flare-coarse-to-fine/2", "x": _Exploit()}, f)
    with pytest.raises(CheckpointError, match="not a checkpoint of this project .*; get weights: ") as caught:
        load(tmp_path / "evil.pt")
    assert "weights_only" not in str(caught.value) and "\n" not in str(caught.value)
    assert "code ran" not in capsys.readouterr().out


def test_read_ct_warns_when_the_values_are_not_hounsfield_units(tmp_path):
    """Air (about -1000 HU) is in every CT; a conversion that lost DICOM's rescale intercept
    leaves it near 0, and the networks would read the scan as bone and contrast."""
    hu = np.full((8, 8, 8), -1000, np.int16)
    hu[2:6, 2:6, 2:6] = 40
    nib.save(nib.Nifti1Image(hu, np.eye(4)), str(tmp_path / "hu.nii.gz"))
    nib.save(nib.Nifti1Image((hu + 1024).astype(np.uint16), np.eye(4)), str(tmp_path / "raw.nii.gz"))
    assert read_ct(tmp_path / "hu.nii.gz").warnings == []
    raw = read_ct(tmp_path / "raw.nii.gz")
    assert raw.warnings == [unit_problem(raw.data)] and "the lowest is 24" in raw.warnings[0]
    np.testing.assert_array_equal(raw.data, hu + 1024.0)  # segmented as it is, only warned about


def test_read_ct_warns_of_a_slice_that_is_not_a_volume(tmp_path):
    """One axial slice exported as NIfTI is read (and segmented) as it is, with a warning naming
    the axis; two-voxel-thin is as thin; three slices are a (thin) volume."""
    for slices, warned in ((1, True), (2, True), (3, False)):
        hu = np.full((8, 8, slices), -1000, np.int16)
        nib.save(nib.Nifti1Image(hu, np.diag([0.8, 0.8, 5.0, 1.0])), str(tmp_path / "s.nii.gz"))
        ct = read_ct(tmp_path / "s.nii.gz")
        assert ct.data.shape == (8, 8, slices)
        assert ct.warnings == ([f"{slices} voxel(s) along z: a slice, not a volume; the networks segment volumes, "
                                "its labels are unreliable"] if warned else [])


def _disk_fills_after(written: int):
    """torch.save onto a disk that is full after `written` bytes: torch's zip writer meets the
    OSError and raises a RuntimeError of its own, as on a real full disk."""
    real = torch.save

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data) -> int:
            if self.f.tell() + len(data) > written:
                raise OSError(28, "No space left on device")
            return self.f.write(data)

        def flush(self) -> None:
            self.f.flush()

    return lambda payload, f: real(payload, FullDisk(f))


def test_a_checkpoint_that_cannot_be_written_leaves_nothing_and_one_line(tmp_path, tiny_networks, monkeypatch, capsys):
    """A full disk: no half checkpoint, no temporary file, the older checkpoint untouched; the
    command says so in one line naming the file, exit code 1, no traceback."""
    out = tmp_path / "w.pt"
    save(out, random_models(**tiny_networks))
    before = out.read_bytes()
    monkeypatch.setattr(torch, "save", _disk_fills_after(1000))
    with pytest.raises(OSError, match="No space"):
        save(out, random_models(**tiny_networks, seed=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"] and out.read_bytes() == before
    assert main(["random", "-o", str(tmp_path / "new.pt")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {tmp_path / 'new.pt'}: No space left on device"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]
    for seed in ("-1", str(2**64)):  # seeds torch cannot take: usage errors, not tracebacks
        with pytest.raises(SystemExit) as exc:
            main(["random", "-o", str(tmp_path / "new.pt"), "--seed", seed])
        assert exc.value.code == 2 and "must be from 0 to 9223372036854775807" in capsys.readouterr().err


def test_an_output_that_cannot_be_a_checkpoint_is_a_usage_error_and_a_folder_no_weights(tmp_path, capsys):
    for command in (["random"], ["combine", "--coarse", "a.pt", "--fine", "b.pt"]):
        with pytest.raises(SystemExit) as exc:
            main([*command, "-o", str(tmp_path)])
        assert exc.value.code == 2 and f"-o {tmp_path}: is a folder" in capsys.readouterr().err
    assert main(["check", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path}: a folder, not a weights file"


def test_an_export_replaces_the_older_one_whole_and_a_failed_one_leaves_it(tmp_path, tiny_networks, monkeypatch,
                                                                          capsys):
    """The older export stays whole until the new one is complete and moved in (and comes back
    where moving fails); nothing half-made is left beside the weights."""
    from inference import openvino_runtime

    weights = tmp_path / "w.pt"
    save(weights, random_models(**tiny_networks))
    folder = openvino_runtime.folder_for(weights)
    folder.mkdir()
    (folder / "manifest.json").write_text("the older export")

    def fake_export(path, models, into):
        (into / "manifest.json").write_text("the new export")

    monkeypatch.setattr(openvino_runtime, "_write_export", fake_export)
    real_replace, moves = Path.replace, []

    def failing_move_in(self, target):
        moves.append((self.name, Path(target).name))
        if Path(target) == folder and len(moves) == 2:  # the new export moving in: the disk fails
            raise OSError(5, "Input/output error")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", failing_move_in)
    with pytest.raises(OSError):
        openvino_runtime.export(weights, load(weights))
    assert (folder / "manifest.json").read_text() == "the older export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.openvino", "w.pt"]
    monkeypatch.setattr(Path, "replace", real_replace)
    assert openvino_runtime.export(weights, load(weights)) == folder
    assert (folder / "manifest.json").read_text() == "the new export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.openvino", "w.pt"]

    def full_disk(path, models, into):
        (into / "coarse.bin").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(openvino_runtime, "_write_export", full_disk)
    monkeypatch.setattr(openvino_runtime, "installed", lambda: True)
    assert main(["export-openvino", str(weights)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {folder}: No space left on device"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.openvino", "w.pt"]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"]


def test_the_channel_suffix_is_one_constant():
    from flare_common.nifti import CHANNEL_SUFFIX

    assert CHANNEL_SUFFIX == "_0000"
    assert output_name(Path(f"case{CHANNEL_SUFFIX}.nii.gz")) == "case.nii.gz"


def test_the_checkpoint_docstring_shows_every_post_processing_field():
    import inference.checkpoint as checkpoint

    for key in Postprocessing().to_dict():
        assert f'"{key}"' in checkpoint.__doc__, key


def test_the_checkpoint_s_networks_and_the_pipeline_s_timed_stages_are_named_apart():
    import inference.checkpoint as checkpoint
    import inference.pipeline as pipeline

    assert checkpoint.NETWORK_STAGES == tuple(checkpoint.NETWORKS) == ("coarse", "fine")
    assert set(checkpoint.NETWORK_STAGES) < set(pipeline.STAGES)
    assert "logits back" in pipeline.STAGES and "resampled back" not in pipeline.__doc__
    assert "labels_at_size" in pipeline.__doc__


def test_edge_padding_repeats_the_edge_voxels_in_the_volumes_own_memory_order():
    volume = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    padding = ((1, 0), (0, 2), (0, 0))
    for laid_out in (volume, np.asfortranarray(volume)):  # C order, and NIfTI's (CT.data)
        padded = edge_padded(laid_out, padding)
        assert np.array_equal(padded, np.pad(volume, padding, mode="edge"))
        assert padded.flags.f_contiguous == laid_out.flags.f_contiguous
    assert edge_padded(volume, ((0, 0),) * 3) is volume  # nothing to pad: the volume itself, not a copy


def test_an_empty_volume_is_called_empty_not_too_large():
    with pytest.raises(InputError, match=r"an empty volume: shape \(8, 8, 0\)"):
        to_canonical(nib.Nifti1Image(np.zeros((8, 8, 0), np.int16), np.eye(4)))


@pytest.mark.parametrize(("dtype", "kind"), [(np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), "RGB"),
                                             (np.complex64, "complex")])
def test_voxels_that_are_no_ct_values_are_refused_by_kind(dtype, kind):
    with pytest.raises(InputError, match=f"^{kind} voxels .*: not CT values$"):
        to_canonical(nib.Nifti1Image(np.zeros((8, 8, 4), dtype), np.eye(4)))


def test_a_long_error_is_shortened_at_a_word_s_end():
    from flare_common.errors import describe_error

    text = describe_error(ValueError("a torch message " * 30), 60)
    assert len(text) <= 60 and text.endswith("[...]") and text.startswith("ValueError: a torch message")


def test_a_checkpoint_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    """torch.save's zip writer turns a full disk's OSError into a RuntimeError: it comes out as the
    OSError, naming the checkpoint meant (the command's one line names the file), and no part of it
    is left behind."""
    import errno

    from inference import checkpoint

    def full_disk(payload, f):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed") from None  # as torch raises it: the OSError its context

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(OSError) as raised:
        checkpoint.save_atomic({"weights": torch.zeros(10)}, tmp_path / "resume.pt")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "resume.pt")
    assert not list(tmp_path.iterdir())
