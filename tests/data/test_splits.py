"""Built-in split lists, checked against the counts and names of the official releases."""

import pytest

from hsr_diffusers.data import get_split, list_splits
from tests.testing_utils import CAVE_DIR, ICVL_DIR, requires_cave, requires_icvl


def test_ntire2020_arad_hs():
    split = get_split("ntire2020")
    assert len(split["train"]) == 450 and len(split["validation"]) == 10
    assert split["train"][0] == "ARAD_HS_0001" and split["train"][-1] == "ARAD_HS_0450"
    # The validation scenes with public ground truth (AWAN's NTIRE2020_Validation_* folders).
    assert split["validation"] == [
        "ARAD_HS_0451", "ARAD_HS_0453", "ARAD_HS_0455", "ARAD_HS_0456", "ARAD_HS_0457",
        "ARAD_HS_0459", "ARAD_HS_0462", "ARAD_HS_0463", "ARAD_HS_0464", "ARAD_HS_0465",
    ]  # fmt: skip
    assert get_split("arad_hs") == split


def test_ntire2022_arad_1k_mst_lists():
    split = get_split("ntire2022")
    assert len(split["train"]) == 897 and len(split["validation"]) == 50
    for excluded in ("ARAD_1K_0314", "ARAD_1K_0340", "ARAD_1K_0531"):
        assert excluded not in split["train"]
    assert split["train"][:2] == ["ARAD_1K_0001", "ARAD_1K_0002"] and split["train"][-1] == "ARAD_1K_0900"
    assert split["validation"][0] == "ARAD_1K_0901" and split["validation"][-1] == "ARAD_1K_0950"
    full = get_split("ntire2022_full")
    assert len(full["train"]) == 900 and full["validation"] == split["validation"]
    assert get_split("arad_1k") == split


def test_cave_split():
    split = get_split("cave")
    assert split["validation"] == ["feathers", "glass_tiles"]
    assert split["train"] == sorted(split["train"]) and len(split["train"]) == 17
    assert split["train"][0] == "balloons" and split["train"][-1] == "superballs"


def test_cave10_split_is_the_first_release():
    split = get_split("cave10")
    assert split["validation"] == ["feathers", "glass_tiles"]
    assert len(split["train"]) == 10
    assert split["train"][0] == "balloons" and split["train"][-1] == "fake_and_real_lemon_slices"
    assert set(split["train"]) < set(get_split("cave")["train"])


@requires_cave
def test_cave_split_covers_the_shared_scenes():
    folders = {path.name.removesuffix("_ms") for path in CAVE_DIR.iterdir() if path.is_dir()}
    split = get_split("cave")
    assert folders == set(split["train"]) | set(split["validation"])


def test_splits_are_disjoint_sorted_and_copies():
    for name in list_splits():
        split = get_split(name)
        assert not set(split["train"]) & set(split["validation"]), name
        assert len(set(split["train"])) == len(split["train"]), name
    get_split("cave")["train"].clear()
    assert len(get_split("cave")["train"]) == 17


def test_unknown_split():
    with pytest.raises(ValueError, match="ntire2020"):
        get_split("ntire2030")


def test_cave_holdout7_keeps_the_released_validation_scenes():
    split = get_split("cave_holdout7")
    assert set(get_split("cave")["validation"]) < set(split["validation"])
    assert len(split["validation"]) == 7 and len(split["train"]) == 12
    assert set(split["train"]) | set(split["validation"]) == set(get_split("cave")["train"]) | {
        "feathers",
        "glass_tiles",
    }


def test_icvl_validation_is_whole_sites():
    from hsr_diffusers.data.splits import icvl_site

    split = get_split("icvl")
    assert len(split["train"]) + len(split["validation"]) == 48 and len(split["validation"]) >= 10
    train_sites = {icvl_site(name) for name in split["train"]}
    validation_sites = {icvl_site(name) for name in split["validation"]}
    assert not train_sites & validation_sites
    assert icvl_site("bguCAMP_0514-1712") == icvl_site("BGU_0522-1127")  # one campus
    assert icvl_site("peppers_0503-1311") == icvl_site("pepper_0503-1229")  # one subject


@requires_icvl
def test_icvl_split_covers_the_shared_strips():
    strips = {path.stem for path in ICVL_DIR.glob("*.npz")}
    split = get_split("icvl")
    assert strips == set(split["train"]) | set(split["validation"])
