"""The real CT that benchmarks and tests use where it is present: `shared/data/real-ct` in the
folder that holds the checkout (not part of the project; its README gives the CT's source and
licence). Anything that uses it skips or leaves it out where it is absent."""
from pathlib import Path

REAL_CT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-ct"
REAL_CT = REAL_CT_FOLDER / "ts_abdomen_0000.nii.gz"  # 122 x 101 x 30 voxels at 3 mm, int16 HU
