import sys
from pathlib import Path

import pytest

from hsr_diffusers.data import make_synthetic_dataset


TRAIN_SCRIPTS = Path(__file__).resolve().parents[2] / "train_scripts"
sys.path.insert(0, str(TRAIN_SCRIPTS))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A prepared dataset with 3 training and 1 validation scene of 32x32x31."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), num_train=3, num_validation=1, height=32, width=32)
