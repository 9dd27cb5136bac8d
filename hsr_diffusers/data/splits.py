"""Official scene lists of the RGB-to-spectral benchmarks, so that every tool trains and validates on the same scenes.

Sources (checked against public repositories):

- NTIRE 2020 ARAD-HS: the training release holds `ARAD_HS_0001` ... `ARAD_HS_0450` (the folder listings in the
  READMEs of the SSRGAN and AWAN challenge entries), and the 10 validation scenes with public ground truth are the ones
  in AWAN's `NTIRE2020_Validation_Clean` / `NTIRE2020_Validation_RealWorld` folders (Deep-imagelab/AWAN). We found no
  public source that drops `ARAD_HS_0340` from the 2020 training set, so it stays in (450 scenes); the scene that the
  MST++ list drops as `0340` belongs to ARAD_1K (below).
- NTIRE 2022 ARAD_1K: `split_txt/train_list.txt` and `valid_list.txt` of MST++ (caiyuanhao1998/MST-plus-plus), the
  list most ARAD_1K papers train on: `ARAD_1K_0001` ... `ARAD_1K_0900` without `0314`, `0340` and `0531` (897 scenes),
  and the 50 validation scenes `ARAD_1K_0901` ... `ARAD_1K_0950`. The official release itself has all 900 training
  scenes: use `"ntire2022_full"` for them.
- CAVE: the 19 scenes in `shared/data/cave`; `feathers` and `glass_tiles` validate and the other 17 train (`"cave"`).
  `"cave10"` is the first release's split: the first 10 scenes alphabetically train, with the same 2 for validation,
  kept so that the first release's numbers stay reproducible. Scene names drop the `_ms` suffix of the folders.

Natural-scene splits, rules written down on 2026-12-05 before any model was trained or scored on them (issue 25):

- CAVE, `"cave_holdout7"`: two scenes are too few to choose a model with, so 7 of the 19 validate: the two that every
  bundled model held out (`feathers`, `glass_tiles`, so that old and new models share a column of scenes none of them
  saw) plus every 4th of the other 17 in sorted order, starting with the first (`balloons`, `cloth`,
  `fake_and_real_food`, `oil_painting`, `superballs`). The other 12 train. `"cave"` stays as it was: the released
  models were trained on it.
- ICVL, `"icvl"`: the 48 strips of `shared/data/icvl_strips` (see its SOURCE.md). Validation measures new places, so it
  holds whole sites: a scene's site is the first three letters of its name, lower-cased (`BGU_*` and `bguCAMP_*` are one
  campus, `pepper_*` and `peppers_*` one subject), which gives 19 sites; in sorted order, every 4th site starting with
  the second validates (`eve`, `leh`, `neg`, `plt`, `rsh`: 12 strips), the other 14 sites (36 strips) train.
"""

__all__ = ["SPLITS", "get_split", "icvl_site", "list_splits"]


def _names(prefix: str, first: int, last: int, exclude: tuple[int, ...] = ()) -> list[str]:
    return [f"{prefix}_{number:04d}" for number in range(first, last + 1) if number not in exclude]


NTIRE2020_VALIDATION = [f"ARAD_HS_{number:04d}" for number in (451, 453, 455, 456, 457, 459, 462, 463, 464, 465)]
# Left out of the MST++ training list (caiyuanhao1998/MST-plus-plus, dataset/split_txt/train_list.txt).
NTIRE2022_EXCLUDED = (314, 340, 531)

CAVE_SCENES = [
    "balloons",
    "beads",
    "cd",
    "clay",
    "cloth",
    "egyptian_statue",
    "face",
    "fake_and_real_beers",
    "fake_and_real_food",
    "fake_and_real_lemon_slices",
    "feathers",
    "glass_tiles",
    "hairs",
    "jelly_beans",
    "oil_painting",
    "paints",
    "pompoms",
    "sponges",
    "superballs",
]
CAVE_VALIDATION = ["feathers", "glass_tiles"]
_CAVE_OTHERS = [name for name in CAVE_SCENES if name not in CAVE_VALIDATION]
CAVE_HOLDOUT7_VALIDATION = sorted(CAVE_VALIDATION + _CAVE_OTHERS[::4])

# The 48 ICVL strips of shared/data/icvl_strips (file stems).
ICVL_STRIPS = [
    "BGU_0522-1127", "BGU_0522-1136", "BGU_0522-1201", "bguCAMP_0514-1712", "bguCAMP_0514-1718", "bguCAMP_0514-1723",
    "eve_0331-1601", "eve_0331-1602", "eve_0331-1606", "gavyam_0823-0944", "gavyam_0823-0945", "gavyam_0823-0950-1",
    "hill_0325-1235", "hill_0325-1242", "Labtest_0910-1504", "Labtest_0910-1509", "Lehavim_0910-1626",
    "Lehavim_0910-1627", "Lehavim_0910-1629", "lst_0408-1004", "lst_0408-1012", "maz_0326-1048", "nachal_0823-1040",
    "nachal_0823-1047", "nachal_0823-1110", "negev_0823-1005", "objects_0924-1556", "objects_0924-1557",
    "objects_0924-1558", "omer_0331-1102", "omer_0331-1104", "omer_0331-1118", "pepper_0503-1229", "pepper_0503-1236",
    "peppers_0503-1311", "peppers_0503-1315", "peppers_0503-1330", "plt_0411-1046", "plt_0411-1116", "plt_0411-1155",
    "prk_0328-1025", "prk_0328-1031", "ramot_0325-1322", "rmt_0328-1249-1", "rsh_0406-1343", "rsh_0406-1356",
    "sat_0406-1129", "sat_0406-1130",
]  # fmt: skip


def icvl_site(name: str) -> str:
    """The site of an ICVL scene: the first three letters of its name, lower-cased (`"bguCAMP_0514-1712"` -> `"bgu"`)."""
    return name[:3].lower()


ICVL_SITES = sorted({icvl_site(name) for name in ICVL_STRIPS})
ICVL_VALIDATION_SITES = ICVL_SITES[1::4]
ICVL_VALIDATION = [name for name in ICVL_STRIPS if icvl_site(name) in ICVL_VALIDATION_SITES]

SPLITS: dict[str, dict[str, list[str]]] = {
    "ntire2020": {"train": _names("ARAD_HS", 1, 450), "validation": NTIRE2020_VALIDATION},
    "ntire2022": {
        "train": _names("ARAD_1K", 1, 900, exclude=NTIRE2022_EXCLUDED),
        "validation": _names("ARAD_1K", 901, 950),
    },
    "ntire2022_full": {"train": _names("ARAD_1K", 1, 900), "validation": _names("ARAD_1K", 901, 950)},
    "cave": {"train": [name for name in CAVE_SCENES if name not in CAVE_VALIDATION], "validation": CAVE_VALIDATION},
    "cave10": {"train": CAVE_SCENES[:10], "validation": CAVE_VALIDATION},
    "cave_holdout7": {
        "train": [name for name in CAVE_SCENES if name not in CAVE_HOLDOUT7_VALIDATION],
        "validation": CAVE_HOLDOUT7_VALIDATION,
    },
    "icvl": {"train": [name for name in ICVL_STRIPS if name not in ICVL_VALIDATION], "validation": ICVL_VALIDATION},
}
SPLITS["arad_hs"] = SPLITS["ntire2020"]
SPLITS["arad_1k"] = SPLITS["ntire2022"]


def list_splits() -> list[str]:
    """Names accepted by [`get_split`]."""
    return sorted(SPLITS)


def get_split(name: str) -> dict[str, list[str]]:
    r"""
    Returns a built-in split as `{split name: scene names}`.

    Args:
        name (`str`):
            `"ntire2020"` (alias `"arad_hs"`): 450 train / 10 validation. `"ntire2022"` (alias `"arad_1k"`): the MST++
            lists, 897 train / 50 validation. `"ntire2022_full"`: 900 / 50. `"cave"`: 17 / 2. `"cave10"`: the first
            release's 10 / 2. `"cave_holdout7"`: 12 / 7. `"icvl"`: the ICVL strips by site, 36 / 12.

    Returns:
        `dict[str, list[str]]`: keys `"train"` and `"validation"`; a fresh copy that the caller may modify.
    """
    if name not in SPLITS:
        raise ValueError(f"Unknown split {name!r}; choose one of {list_splits()}.")
    return {split: list(names) for split, names in SPLITS[name].items()}
