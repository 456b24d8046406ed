import signal
from pathlib import Path

import pytest

from bench.shared_data import REAL_CT_FOLDER
from inference.checkpoint import random_models, save
from inference.networks import CoarseConfig, FineConfig

# A suite started in the background (`cmd &` in a shell without job control) inherits SIGINT
# ignored, and so would every process the tests start, which the Ctrl-C tests rely on receiving
# it. A handler, unlike an ignored signal, is reset to the default in the processes started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def real_ct() -> Path:
    """The real CT folder of ../shared/data; skips where this checkout has no ../shared."""
    if not (REAL_CT_FOLDER / "ts_abdomen_ref_flare21.nii.gz").is_file():
        pytest.skip(f"real-CT test data not present at {REAL_CT_FOLDER} (it lives beside the project in ../shared)")
    return REAL_CT_FOLDER


@pytest.fixture(scope="session")
def tiny_networks() -> dict:
    """Configs of small networks (fast on the CPU) for pipeline tests, as random_models kwargs."""
    return dict(coarse=CoarseConfig(widths=(4, 8, 8, 16, 16), input_size=(32, 32, 32)),
                fine=FineConfig(widths=(4, 8, 8, 16, 16), context_width=8, input_size=(48, 48, 32)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_networks) -> Path:
    """A checkpoint of small untrained networks (fixed seed) that find organ-like regions in the
    test CTs."""
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save(path, random_models(**tiny_networks, seed=3))
    return path
