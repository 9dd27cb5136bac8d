"""`hsr data prepare` and `hsr data info`, run in-process through `hsr_diffusers.cli.main`."""

import datasets
import numpy as np
import pytest

from hsr_diffusers.cli import main
from hsr_diffusers.data import read_metadata, save_cube
from tests.testing_utils import smooth_cube


WAVELENGTHS = np.arange(400.0, 701.0, 10.0)


@pytest.fixture
def src(tmp_path):
    folder = tmp_path / "src"
    for index in range(4):
        save_cube(folder / f"scene_{index}.h5", smooth_cube(12, 10, 31, seed=index), WAVELENGTHS)
    return folder


def test_prepare_writes_the_dataset_and_a_summary(tmp_path, src, capsys):
    status = main(
        ["data", "prepare", "--format", "folder", str(src), str(tmp_path / "out"), "--response", "canon_40d"]
    )
    assert status == 0
    output = capsys.readouterr().out
    assert "split  scenes  shape (H x W x bands)" in output
    assert "train  4       12x10x31" in output
    assert "skipped: 0 scene(s)" in output
    dataset = datasets.load_from_disk(str(tmp_path / "out"))
    assert dataset["train"].num_rows == 4
    assert read_metadata(tmp_path / "out")["response"] == "canon_40d"


def test_prepare_fails_on_a_bad_scene_unless_skip_bad(tmp_path, src, capsys):
    (src / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)  # an HDF5 signature, nothing behind it
    cube = smooth_cube(12, 10, 31)
    cube[0, 0, 0] = np.inf
    save_cube(src / "inf.npy", cube)

    assert main(["data", "prepare", "--format", "folder", str(src), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "2 scene(s) failed" in error and "--skip-bad" in error
    assert f"{src / 'broken.h5'}: " in error and "truncated" in error
    assert f"{src / 'inf.npy'}: " in error and "NaN or Inf" in error
    assert not (tmp_path / "out").exists()

    assert main(["data", "prepare", "--format", "folder", str(src), str(tmp_path / "out"), "--skip-bad"]) == 0
    output = capsys.readouterr().out
    assert "skipped: 2 scene(s):" in output and str(src / "inf.npy") in output
    assert datasets.load_from_disk(str(tmp_path / "out"))["train"].num_rows == 4


def test_prepare_reports_split_coverage_and_guards_the_output(tmp_path, src, capsys):
    out = tmp_path / "out"
    status = main(["data", "prepare", "--format", "folder", str(src), str(out), "--split", "cave"])
    # None of the synthetic scenes is a CAVE scene: nothing to write is an error, not a silent empty dataset.
    assert status == 1 and "No scene" in capsys.readouterr().err
    assert main(["data", "prepare", "--format", "folder", str(src), str(out)]) == 0
    assert main(["data", "prepare", "--format", "folder", str(src), str(out)]) == 1
    assert "overwrite" in capsys.readouterr().err
    assert main(["data", "prepare", "--format", "folder", str(src), str(out), "--overwrite"]) == 0
    assert main(["data", "prepare", "--format", "folder", str(tmp_path / "nowhere"), str(tmp_path / "o2")]) == 1


def test_info_on_a_cube_a_dataset_and_a_bad_file(tmp_path, src, capsys):
    assert main(["data", "info", str(src / "scene_1.h5")]) == 0
    output = capsys.readouterr().out
    assert "format:      h5 (HDF5 .h5)" in output and "12 x 10 x 31" in output and "400 ... 700 nm" in output

    main(["data", "prepare", "--format", "folder", str(src), str(tmp_path / "out")])
    capsys.readouterr()
    assert main(["data", "info", str(tmp_path / "out")]) == 0
    output = capsys.readouterr().out
    assert "num_rows: 4" in output and "train  4" in output

    (tmp_path / "notes.mat").write_text("hello")
    assert main(["data", "info", str(tmp_path / "notes.mat")]) == 1
    assert "not a recognised cube file" in capsys.readouterr().err


def test_data_needs_a_subcommand_and_a_known_format(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["data"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--format", "envi", str(tmp_path), str(tmp_path / "out")])


def test_cli_format_choices_come_from_the_builder(capsys):
    from hsr_diffusers.data import DATASET_FORMATS

    with pytest.raises(SystemExit) as info:
        main(["data", "prepare", "--format", "envi", "src", "out"])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'envi'" in error and f"choose from {', '.join(DATASET_FORMATS)}" in error
