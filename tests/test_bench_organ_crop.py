"""Crops round an organ: the box and its margins, world coordinates kept, the cases left out or refused."""
import nibabel as nib
import numpy as np

from bench import organ_crop


def test_the_box_is_the_organ_plus_the_margin_in_mm_on_each_axis_clipped_to_the_scan():
    mask = np.zeros((40, 30, 20), bool)
    mask[10:20, 5:8, 15:18] = True
    box = organ_crop.crop_box(mask, (2.0, 1.0, 0.5), (4.0, 4.0), np.random.default_rng(0))
    # 4 mm is 2 voxels along x, 4 along y, 8 along z (clipped at the last slice)
    assert box == (slice(8, 22), slice(1, 12), slice(7, 20))
    assert organ_crop.crop_box(np.zeros((5, 5, 5), bool), (1.0, 1.0, 1.0), (4.0, 4.0), np.random.default_rng(0)) is None


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), path)


def test_crops_keep_world_coordinates_and_data_and_name_what_they_leave_out(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    affine = np.array([[-0.8, 0, 0, 120.0], [0, -0.8, 0, 90.0], [0, 0, 2.5, -300.0], [0, 0, 0, 1]])  # LPS storage
    rng = np.random.default_rng(1)
    ct = rng.integers(-1000, 1000, (64, 64, 24)).astype(np.int16)
    labels = np.zeros(ct.shape, np.uint8)
    labels[20:40, 30:36, 10:14] = 4
    labels[5:15, 5:15, 5:15] = 1
    _save(data / "images" / "a_0000.nii.gz", ct, affine)
    _save(data / "labels" / "a.nii.gz", labels, affine)
    _save(data / "images" / "b_0000.nii.gz", ct, affine)  # no pancreas
    _save(data / "labels" / "b.nii.gz", np.where(labels == 4, 0, labels).astype(np.uint8), affine)
    _save(data / "images" / "c_0000.nii.gz", ct, affine)  # no label map
    (data / "pathological.txt").write_text("a\nb\n")

    assert organ_crop.main(["-i", str(data), "-o", str(out), "--margin", "4", "4"]) == 0
    captured = capsys.readouterr()
    assert "1 of 2 case(s) cropped round label 4" in captured.out
    assert "no label map: c" in captured.err and "no voxel of label 4: b" in captured.err
    image, cropped = nib.load(out / "images" / "a_0000.nii.gz"), nib.load(out / "labels" / "a.nii.gz")
    assert image.get_data_dtype() == np.int16 and cropped.get_data_dtype() == np.uint8
    assert image.shape == cropped.shape == (30, 16, 8)  # 4 mm: 5 voxels of 0.8 mm, 1.6 of 2.5 mm (rounded out)
    start = np.array([15, 25, 8])
    assert np.allclose(image.affine[:3, 3], (affine @ np.append(start, 1))[:3])  # the same world point
    assert np.array_equal(np.asarray(image.dataobj), ct[15:45, 25:41, 8:16])
    assert np.array_equal(np.asarray(cropped.dataobj), labels[15:45, 25:41, 8:16])
    assert (out / "pathological.txt").read_text() == "a\n"


def test_a_label_map_without_its_image_is_named_on_one_line_and_the_others_are_cropped(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[6:9, 6:9, 6:9] = 4
    for name in ("a", "b"):
        _save(data / "labels" / f"{name}.nii.gz", labels, np.eye(4))
    _save(data / "images" / "b_0000.nii.gz", np.zeros((16, 16, 16), np.int16), np.eye(4))
    assert organ_crop.main(["-i", str(data), "-o", str(out)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {data / 'images' / 'a_0000.nii.gz'}: missing"]
    assert (out / "labels" / "b.nii.gz").is_file() and not (out / "labels" / "a.nii.gz").exists()
