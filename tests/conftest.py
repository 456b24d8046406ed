from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-ct"


@pytest.fixture
def real_ct() -> Path:
    """The real CT folder of ../shared/data; skips where this checkout has no ../shared."""
    if not (SHARED_DATA / "ts_abdomen_ref_flare21.nii.gz").is_file():
        pytest.skip(f"real-CT test data not present at {SHARED_DATA} (it lives beside the project in ../shared)")
    return SHARED_DATA
