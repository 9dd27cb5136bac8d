"""Cube readers and writers on tiny files written in each real format by the tests themselves."""

import io
import json
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile
from PIL import Image

from hsr_diffusers.data import CubeFormatError, detect_format, load_cube, load_cube_with_wavelengths, save_cube
from hsr_diffusers.data.io import CUBE_FORMATS, SAVE_SUFFIXES, CubeWriter, cube_file_paths, partial_path
from tests.testing_utils import smooth_cube


WAVELENGTHS = np.arange(400.0, 701.0, 10.0)


@pytest.fixture
def cube():
    # H != W so that a swapped spatial axis cannot pass.
    return smooth_cube(5, 7, 31, seed=1)


def write_matlab_73(path, variables):
    """A MATLAB 7.3 file as MATLAB writes it: HDF5 with a 512-byte user block holding the MAT header, and every
    variable stored with its axes reversed (MATLAB is column-major)."""
    with h5py.File(path, "w", userblock_size=512) as file:
        for name, value in variables.items():
            value = np.asarray(value)
            file.create_dataset(name, data=value.T)
            file[name].attrs["MATLAB_class"] = np.bytes_("single" if value.dtype == np.float32 else "double")
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as file:
        file.write(text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def write_cave_scene(folder, bands: np.ndarray, prefix: str, rgba_8bit: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(bands.shape[-1]):
        band = bands[..., index]
        if rgba_8bit:
            image = Image.fromarray(np.stack([band, band, band, np.full_like(band, 255)], axis=-1), mode="RGBA")
        else:
            image = Image.fromarray(band)  # uint16 -> 16-bit grayscale PNG
        image.save(folder / f"{prefix}_{index + 1:02d}.png")


# ----------------------------------------------------------------------------------------------------------------------
# Real-format readers
# ----------------------------------------------------------------------------------------------------------------------


def test_arad_mat_v5(tmp_path, cube):
    path = tmp_path / "ARAD_HS_0001.mat"
    scipy.io.savemat(path, {"cube": cube, "bands": WAVELENGTHS[None, :], "norm_factor": 3.5})
    loaded, wavelengths = load_cube_with_wavelengths(path)
    assert detect_format(path) == "mat"
    assert loaded.dtype == np.float32 and loaded.shape == (5, 7, 31)
    np.testing.assert_array_equal(loaded, cube)  # norm_factor is not applied
    np.testing.assert_array_equal(wavelengths, WAVELENGTHS)


def test_arad_mat_v73_reversed_axes(tmp_path, cube):
    path = tmp_path / "ARAD_1K_0001.mat"
    write_matlab_73(path, {"cube": cube, "bands": WAVELENGTHS[None, :], "norm_factor": np.array([[2.0]])})
    with h5py.File(path, "r") as file:
        assert file["cube"].shape == (31, 7, 5)  # what h5py sees: (bands, W, H)
    assert detect_format(path) == "mat"
    loaded, wavelengths = load_cube_with_wavelengths(path)
    np.testing.assert_array_equal(loaded, cube)
    np.testing.assert_array_equal(wavelengths, WAVELENGTHS)


def test_arad_bands_in_micrometres_are_converted(tmp_path, cube):
    path = tmp_path / "um.mat"
    scipy.io.savemat(path, {"cube": cube, "bands": WAVELENGTHS[None, :] / 1000})
    np.testing.assert_allclose(load_cube_with_wavelengths(path)[1], WAVELENGTHS)


@pytest.mark.parametrize("version", ["5", "7.3"])
def test_icvl_rad_is_divided_by_4095(tmp_path, version):
    rad = np.random.default_rng(0).integers(0, 4096, size=(6, 4, 31)).astype(np.float64)
    path = tmp_path / "BGU_0403-1419.mat"
    if version == "5":
        scipy.io.savemat(path, {"rad": rad, "bands": WAVELENGTHS[None, :]})
    else:
        write_matlab_73(path, {"rad": rad, "bands": WAVELENGTHS[None, :]})
    loaded = load_cube(path)
    np.testing.assert_allclose(loaded, rad / 4095.0, rtol=1e-6)
    assert loaded.max() <= 1.0


def test_cave_flat_folder(tmp_path):
    bands = np.random.default_rng(0).integers(1, 65536, size=(4, 6, 31)).astype(np.uint16)
    write_cave_scene(tmp_path / "beads_ms", bands, "beads_ms")
    loaded, wavelengths = load_cube_with_wavelengths(tmp_path / "beads_ms")
    assert detect_format(tmp_path / "beads_ms") == "cave"
    np.testing.assert_allclose(loaded, bands / 65535.0, rtol=1e-6)
    np.testing.assert_array_equal(wavelengths, WAVELENGTHS)


def test_cave_nested_folder_of_the_original_download(tmp_path):
    bands = np.random.default_rng(1).integers(1, 65536, size=(4, 6, 31)).astype(np.uint16)
    write_cave_scene(tmp_path / "clay_ms" / "clay_ms", bands, "clay_ms")
    (tmp_path / "clay_ms" / "clay_ms" / "clay_RGB.bmp").write_bytes(b"BM not a band")
    np.testing.assert_allclose(load_cube(tmp_path / "clay_ms"), bands / 65535.0, rtol=1e-6)


def test_cave_watercolors_8bit_rgba_quirk(tmp_path):
    bands = np.random.default_rng(2).integers(1, 256, size=(4, 6, 31)).astype(np.uint8)
    write_cave_scene(tmp_path / "watercolors_ms", bands, "watercolors_ms", rgba_8bit=True)
    with Image.open(tmp_path / "watercolors_ms" / "watercolors_ms_01.png") as image:
        assert image.mode == "RGBA"
    np.testing.assert_allclose(load_cube(tmp_path / "watercolors_ms"), bands / 255.0, rtol=1e-6)


def test_plain_h5_npy_npz(tmp_path, cube):
    with h5py.File(tmp_path / "a.h5", "w") as file:
        file["cube"] = cube
        file["wavelengths"] = WAVELENGTHS
    np.save(tmp_path / "b.npy", cube)
    np.savez(tmp_path / "c.npz", cube=cube, wavelengths=WAVELENGTHS)
    for name in ("a.h5", "b.npy", "c.npz"):
        loaded = load_cube(tmp_path / name)
        np.testing.assert_array_equal(loaded, cube)
        assert loaded.flags.writeable and loaded.flags.c_contiguous
    assert load_cube_with_wavelengths(tmp_path / "b.npy")[1] is None  # no sidecar
    np.testing.assert_array_equal(load_cube_with_wavelengths(tmp_path / "c.npz")[1], WAVELENGTHS)


def test_format_comes_from_content_not_suffix(tmp_path, cube):
    scipy.io.savemat(tmp_path / "v5.mat", {"cube": cube})
    (tmp_path / "really_v5.h5").write_bytes((tmp_path / "v5.mat").read_bytes())
    np.save(tmp_path / "n.npy", cube)
    (tmp_path / "really_npy.mat").write_bytes((tmp_path / "n.npy").read_bytes())
    assert detect_format(tmp_path / "really_v5.h5") == "mat"
    assert detect_format(tmp_path / "really_npy.mat") == "npy"
    np.testing.assert_array_equal(load_cube(tmp_path / "really_v5.h5"), cube)
    np.testing.assert_array_equal(load_cube(tmp_path / "really_npy.mat"), cube)


def test_band_first_tiff_pages(tmp_path, cube):
    tifffile.imwrite(tmp_path / "pages.tif", cube.transpose(2, 0, 1), photometric="minisblack")
    np.testing.assert_array_equal(load_cube(tmp_path / "pages.tif"), cube)


# ----------------------------------------------------------------------------------------------------------------------
# Writers: read back with the format's own tools, then with load_cube
# ----------------------------------------------------------------------------------------------------------------------


def test_save_npy_with_wavelength_sidecar(tmp_path, cube):
    path = save_cube(tmp_path / "x.npy", cube, WAVELENGTHS)
    np.testing.assert_array_equal(np.load(path), cube)
    np.testing.assert_array_equal(np.load(tmp_path / "x.wavelengths.npy"), WAVELENGTHS)
    loaded, wavelengths = load_cube_with_wavelengths(path)
    np.testing.assert_array_equal(loaded, cube)
    np.testing.assert_array_equal(wavelengths, WAVELENGTHS)


def test_save_npz_and_h5(tmp_path, cube):
    save_cube(tmp_path / "x.npz", cube, WAVELENGTHS)
    save_cube(tmp_path / "x.h5", cube, WAVELENGTHS)
    with np.load(tmp_path / "x.npz") as content:
        np.testing.assert_array_equal(content["cube"], cube)
    with h5py.File(tmp_path / "x.h5", "r") as file:
        assert file["cube"].shape == (5, 7, 31)
        np.testing.assert_array_equal(file["wavelengths"][()], WAVELENGTHS)
    for name in ("x.npz", "x.h5"):
        loaded, wavelengths = load_cube_with_wavelengths(tmp_path / name)
        np.testing.assert_array_equal(loaded, cube)
        np.testing.assert_array_equal(wavelengths, WAVELENGTHS)


def test_save_mat_v5_like_ntire(tmp_path, cube):
    save_cube(tmp_path / "x.mat", cube, WAVELENGTHS)
    content = scipy.io.loadmat(tmp_path / "x.mat")
    assert content["cube"].shape == (5, 7, 31) and content["cube"].dtype == np.float32
    np.testing.assert_array_equal(content["cube"], cube)
    assert content["bands"].shape == (1, 31)
    assert (tmp_path / "x.mat").read_bytes().startswith(b"MATLAB 5.0 MAT-file")


def test_save_mat_v73_as_matlab_writes_it(tmp_path, cube):
    path = save_cube(tmp_path / "x.mat", cube, WAVELENGTHS, mat_version="7.3")
    header = path.read_bytes()[:512]
    assert header.startswith(b"MATLAB 7.3 MAT-file") and header[124:128] == b"\x00\x02IM"
    assert path.read_bytes()[512:520] == b"\x89HDF\r\n\x1a\n"
    with h5py.File(path, "r") as file:
        assert file.userblock_size == 512
        assert file["cube"].shape == (31, 7, 5)  # reversed, as MATLAB stores an (H, W, bands) array
        assert file["cube"].attrs["MATLAB_class"] == b"single"
        np.testing.assert_array_equal(file["cube"][()].transpose(2, 1, 0), cube)
        assert file["bands"].shape == (31, 1)
    loaded, wavelengths = load_cube_with_wavelengths(path)
    np.testing.assert_array_equal(loaded, cube)
    np.testing.assert_array_equal(wavelengths, WAVELENGTHS)


@pytest.mark.parametrize("interleave", ["bsq", "bil"])
def test_save_envi_round_trip(tmp_path, cube, interleave):
    header = save_cube(tmp_path / "x.hdr", cube, WAVELENGTHS, interleave=interleave)
    text = header.read_text()
    assert text.startswith("ENVI\n")
    expected_lines = ["samples = 7", "lines = 5", "bands = 31", "data type = 4", f"interleave = {interleave}"]
    for line in expected_lines + ["byte order = 0", "wavelength units = Nanometers"]:
        assert line in text.splitlines()
    assert "wavelength = {400, 410, 420," in text
    raw = np.fromfile(tmp_path / "x.img", dtype="<f4")
    expected = cube.transpose(2, 0, 1) if interleave == "bsq" else cube.transpose(0, 2, 1)
    np.testing.assert_array_equal(raw, expected.ravel())
    for path in (header, tmp_path / "x.img"):  # the header or the data file
        loaded, wavelengths = load_cube_with_wavelengths(path)
        np.testing.assert_array_equal(loaded, cube)
        np.testing.assert_array_equal(wavelengths, WAVELENGTHS)


def test_save_envi_read_by_spectral_python(tmp_path, cube):
    spectral = pytest.importorskip("spectral")
    header = save_cube(tmp_path / "x.hdr", cube, WAVELENGTHS, interleave="bil")
    image = spectral.envi.open(str(header), str(tmp_path / "x.img"))
    np.testing.assert_array_equal(np.asarray(image.load()), cube)
    np.testing.assert_array_equal(image.bands.centers, WAVELENGTHS)


def test_save_tiff_band_last_contig(tmp_path, cube):
    path = save_cube(tmp_path / "x.tif", cube, WAVELENGTHS)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert len(tif.pages) == 1
        assert page.samplesperpixel == 31 and page.planarconfig == tifffile.PLANARCONFIG.CONTIG
        np.testing.assert_array_equal(page.asarray(), cube)
        assert json.loads(page.description)["wavelengths"] == WAVELENGTHS.tolist()
    loaded, wavelengths = load_cube_with_wavelengths(path)
    np.testing.assert_array_equal(loaded, cube)
    np.testing.assert_array_equal(wavelengths, WAVELENGTHS)


@pytest.mark.parametrize("name", [f"x{suffix}" for suffix in sorted(SAVE_SUFFIXES.values())])
def test_writers_refuse_to_overwrite(tmp_path, cube, name):
    save_cube(tmp_path / name, cube, WAVELENGTHS)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_cube(tmp_path / name, cube, WAVELENGTHS)
    save_cube(tmp_path / name, cube * 0.5, WAVELENGTHS, overwrite=True)
    np.testing.assert_allclose(load_cube(tmp_path / name), cube * 0.5)


def test_writer_refuses_when_only_the_sidecar_exists(tmp_path, cube):
    (tmp_path / "x.img").write_bytes(b"someone else's data")
    with pytest.raises(FileExistsError, match="x.img"):
        save_cube(tmp_path / "x.hdr", cube, WAVELENGTHS)
    # The wavelengths of another cube would be read as this one's: refused too, even when this cube has none.
    np.save(tmp_path / "y.wavelengths.npy", WAVELENGTHS)
    with pytest.raises(FileExistsError, match="y.wavelengths.npy"):
        save_cube(tmp_path / "y.npy", cube)


def test_writer_argument_errors(tmp_path, cube):
    with pytest.raises(ValueError, match="suffix"):
        save_cube(tmp_path / "x.xyz", cube)
    with pytest.raises(ValueError, match="wavelengths"):
        save_cube(tmp_path / "x.npy", cube, WAVELENGTHS[:30])
    with pytest.raises(ValueError, match="shape"):
        save_cube(tmp_path / "x.npy", cube[0])


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: one CubeFormatError naming the file and the problem
# ----------------------------------------------------------------------------------------------------------------------


def error_for(path, **kwargs) -> str:
    with pytest.raises(CubeFormatError) as info:
        load_cube(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    return message


def test_truncated_mat_v5(tmp_path, cube):
    scipy.io.savemat(tmp_path / "full.mat", {"cube": cube, "bands": WAVELENGTHS[None, :], "norm_factor": 1.0})
    data = (tmp_path / "full.mat").read_bytes()
    for cut in (len(data) // 2, len(data) - 4):  # inside the cube, inside the last variable
        (tmp_path / "cut.mat").write_bytes(data[:cut])
        assert "truncated" in error_for(tmp_path / "cut.mat")


def test_truncated_mat_v73(tmp_path, cube):
    write_matlab_73(tmp_path / "full.mat", {"cube": cube})
    data = (tmp_path / "full.mat").read_bytes()
    (tmp_path / "cut.mat").write_bytes(data[: len(data) // 2])
    assert "truncated" in error_for(tmp_path / "cut.mat")


def test_missing_key_lists_the_keys_present(tmp_path, cube):
    scipy.io.savemat(tmp_path / "v5.mat", {"hsi": cube, "meta": 1.0})
    write_matlab_73(tmp_path / "v73.mat", {"hsi": cube})
    for name in ("v5.mat", "v73.mat"):
        message = error_for(tmp_path / name)
        assert "'cube'" in message and "'hsi'" in message
    assert "'rad'" in error_for(tmp_path / "v5.mat", key="rad")
    np.testing.assert_array_equal(load_cube(tmp_path / "v73.mat", key="hsi"), cube)


def test_foreign_and_empty_files(tmp_path):
    (tmp_path / "notes.mat").write_text("just some text, not a MATLAB file\n")
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.png")
    (tmp_path / "empty.npy").write_bytes(b"")
    assert "not a recognised cube file" in error_for(tmp_path / "notes.mat")
    assert "not a recognised cube file" in error_for(tmp_path / "photo.png")
    assert "empty" in error_for(tmp_path / "empty.npy")
    assert "no such file" in error_for(tmp_path / "missing.mat")


def test_wrong_band_count_and_shape(tmp_path, cube):
    np.save(tmp_path / "ten.npy", cube[..., :10])
    np.save(tmp_path / "flat.npy", cube[..., 0])
    message = error_for(tmp_path / "ten.npy", expected_bands=31)
    assert "10 bands" in message and "expected 31" in message
    assert "3-D" in error_for(tmp_path / "flat.npy")


@pytest.mark.parametrize("bad", ["nan", "inf", "zeros"])
def test_nan_inf_and_all_zero_cubes(tmp_path, cube, bad):
    if bad == "zeros":
        cube = np.zeros_like(cube)
    else:
        cube[1, 2, 3] = np.nan if bad == "nan" else np.inf
    scipy.io.savemat(tmp_path / "bad.mat", {"cube": cube})
    message = error_for(tmp_path / "bad.mat")
    assert ("all zeros" in message) if bad == "zeros" else ("1 NaN or Inf" in message)


def test_empty_and_incomplete_cave_folders(tmp_path):
    (tmp_path / "empty_ms").mkdir()
    assert "no CAVE band images" in error_for(tmp_path / "empty_ms")
    bands = np.ones((4, 6, 31), dtype=np.uint16)
    write_cave_scene(tmp_path / "gap_ms", bands, "gap_ms")
    (tmp_path / "gap_ms" / "gap_ms_03.png").unlink()
    assert "[3] are missing (gap_ms_03.png)" in error_for(tmp_path / "gap_ms")


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_cave_folder_without_its_last_band_names_it(tmp_path, layout):
    # 30 of 31 PNGs: no gap in the numbers, yet not a CAVE scene (it used to load as a 30-band cube).
    folder = tmp_path / "beads_ms"
    bands = np.random.default_rng(0).integers(1, 65536, size=(4, 6, 30)).astype(np.uint16)
    write_cave_scene(folder / "beads_ms" if layout == "nested" else folder, bands, "beads_ms")
    message = error_for(folder)
    assert "[31] are missing (beads_ms_31.png)" in message and "found 30 bands" in message


def test_cave_folder_with_an_extra_band(tmp_path):
    bands = np.ones((4, 6, 32), dtype=np.uint16)
    write_cave_scene(tmp_path / "extra_ms", bands, "extra_ms")
    assert "32 band images, a CAVE scene has 31" in error_for(tmp_path / "extra_ms")


def test_truncated_envi_data(tmp_path, cube):
    save_cube(tmp_path / "x.hdr", cube, WAVELENGTHS)
    data = (tmp_path / "x.img").read_bytes()
    (tmp_path / "x.img").write_bytes(data[:-100])
    with pytest.raises(CubeFormatError, match="truncated"):
        load_cube(tmp_path / "x.hdr")


def test_large_mat_switches_to_v73(tmp_path, monkeypatch):
    import hsr_diffusers.data.io as io_module

    monkeypatch.setattr(io_module, "MAT_V5_MAX_BYTES", 100)  # pretend the 2 GB limit is 100 bytes
    path = save_cube(tmp_path / "big.mat", np.ones((3, 4, 5), dtype=np.float32))
    assert path.read_bytes().startswith(b"MATLAB 7.3 MAT-file")
    assert detect_format(path) == "mat"


# ----------------------------------------------------------------------------------------------------------------------
# Writing block by block
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("format", sorted(SAVE_SUFFIXES) + ["mat73", "bil"])
def test_cube_writer_in_blocks_makes_the_files_of_save_cube(tmp_path, format):
    cube = smooth_cube(9, 7, 31, seed=2)
    options = {"mat73": {"mat_version": "7.3"}, "bil": {"interleave": "bil"}}.get(format, {})
    format = {"mat73": "mat", "bil": "envi"}.get(format, format)
    whole = save_cube(tmp_path / "whole" / f"x{SAVE_SUFFIXES[format]}", cube, WAVELENGTHS, **options)
    path = tmp_path / "blocks" / f"x{SAVE_SUFFIXES[format]}"
    with CubeWriter(path, cube.shape, WAVELENGTHS, **options) as writer:
        for top in (4, 0, 8):  # any order, uneven blocks
            writer.write_rows(top, cube[top : top + 4])
    assert [p.name for p in writer.paths] == [p.name for p in cube_file_paths(whole, format)]
    loaded, wavelengths = load_cube_with_wavelengths(path)
    np.testing.assert_array_equal(loaded, cube)
    np.testing.assert_array_equal(wavelengths, WAVELENGTHS)
    # Raw layouts, block by block and in one piece: byte for byte the layout written independently of CubeWriter.
    if format == "npy":
        expected = io.BytesIO()
        np.save(expected, cube.astype("<f4"))
        assert writer.paths[0].read_bytes() == whole.read_bytes() == expected.getvalue()
    elif format == "envi":
        # BSQ stores (bands, H, W), BIL (H, bands, W), float32 little-endian.
        layout = (0, 2, 1) if options.get("interleave") == "bil" else (2, 0, 1)
        expected = np.ascontiguousarray(cube.transpose(layout), dtype="<f4").tobytes()
        assert writer.paths[1].suffix == ".img"
        assert writer.paths[1].read_bytes() == cube_file_paths(whole, format)[1].read_bytes() == expected


def test_cube_writer_checks_blocks_and_removes_its_files_on_error(tmp_path):
    path = tmp_path / "x.h5"
    with pytest.raises(ValueError, match="do not fit"):
        with CubeWriter(path, (4, 5, 31)) as writer:
            writer.write_rows(2, np.zeros((3, 5, 31)))  # rows 2-4 of a 4-row cube
    assert list(tmp_path.iterdir()) == []  # nothing under the final name, no temporary file either


# ----------------------------------------------------------------------------------------------------------------------
# The format registry: every format it writes, read back by the tool people use for it
# ----------------------------------------------------------------------------------------------------------------------


def read_envi_with_spectral(path):
    import spectral  # a test dependency: Spectral Python, as third-party tools read ENVI

    image = spectral.open_image(str(path))
    return np.asarray(image.load()), np.asarray(image.bands.centers)


def read_mat_with_scipy_or_h5py(path):
    if path.read_bytes().startswith(b"MATLAB 5.0"):
        content = scipy.io.loadmat(path)
        return content["cube"], content["bands"][0]
    with h5py.File(path, "r") as file:  # MATLAB 7.3: column-major, so h5py sees (bands, W, H)
        return file["cube"][()].T, file["bands"][()].T[0]


def read_h5_with_h5py(path):
    with h5py.File(path, "r") as file:
        return file["cube"][()], file["wavelengths"][()]


def read_tiff_with_tifffile(path):
    with tifffile.TiffFile(path) as tif:
        return tif.asarray(), json.loads(tif.pages[0].description)["wavelengths"]


def read_npz_with_numpy(path):
    with np.load(path) as content:
        return content["cube"], content["wavelengths"]


# One reader per format that `save_cube` writes: a new format must add the tool that reads it here.
USUAL_TOOLS = {
    "envi": read_envi_with_spectral,
    "h5": read_h5_with_h5py,
    "mat": read_mat_with_scipy_or_h5py,
    "npy": lambda path: (np.load(path), np.load(cube_file_paths(path, "npy")[1])),
    "npz": read_npz_with_numpy,
    "tiff": read_tiff_with_tifffile,
}


def test_registry_names_agree_everywhere():
    assert set(USUAL_TOOLS) == set(SAVE_SUFFIXES)
    assert SAVE_SUFFIXES == {name: f.suffixes[0] for name, f in CUBE_FORMATS.items() if f.writer is not None}
    assert set(CUBE_FORMATS) == set(SAVE_SUFFIXES) | {"cave"}  # CAVE folders are read, never written


@pytest.mark.parametrize("format, version", [(name, None) for name in sorted(SAVE_SUFFIXES)] + [("mat", "7.3")])
def test_registry_round_trip_through_the_usual_tool(tmp_path, cube, format, version):
    path = save_cube(tmp_path / f"x{SAVE_SUFFIXES[format]}", cube, WAVELENGTHS, mat_version=version)
    assert detect_format(path) == format
    stored, wavelengths = USUAL_TOOLS[format](path)
    np.testing.assert_array_equal(np.asarray(stored, dtype=np.float32), cube)
    np.testing.assert_allclose(np.asarray(wavelengths, dtype=float).reshape(-1), WAVELENGTHS)
    loaded, loaded_wavelengths = load_cube_with_wavelengths(path)
    np.testing.assert_array_equal(loaded, cube)
    np.testing.assert_array_equal(loaded_wavelengths, WAVELENGTHS)
    assert sorted(tmp_path.iterdir()) == sorted(cube_file_paths(path, format))  # no temporary file left


@pytest.mark.parametrize("format", sorted(set(SAVE_SUFFIXES) - {"envi"}))  # ENVI: the header is the content
def test_every_written_format_is_detected_by_content_under_any_name(tmp_path, cube, format):
    path = save_cube(tmp_path / f"x{SAVE_SUFFIXES[format]}", cube, format=format)
    disguised = tmp_path / "cube.bin"
    disguised.write_bytes(path.read_bytes())
    assert detect_format(disguised) == format
    np.testing.assert_array_equal(load_cube(disguised), cube)


@pytest.mark.parametrize("format", sorted(SAVE_SUFFIXES))
def test_every_written_format_truncated_gives_a_clear_error(tmp_path, format):
    cube = smooth_cube(40, 30, 31, seed=3)  # large enough that half the file cuts into the cube
    path = save_cube(tmp_path / f"x{SAVE_SUFFIXES[format]}", cube, WAVELENGTHS)
    data_file = cube_file_paths(path, format)[1 if format == "envi" else 0]
    data = data_file.read_bytes()
    data_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CubeFormatError, match="truncated") as info:
        load_cube(path)
    assert str(data_file.name) in str(info.value)


def test_old_format_names_still_work_with_a_warning(tmp_path, cube):
    h5 = save_cube(tmp_path / "x.h5", cube)
    v5 = save_cube(tmp_path / "x.mat", cube)
    with pytest.warns(FutureWarning, match="'hdf5' is now called 'h5'"):
        assert detect_format(h5) == "hdf5"
    with pytest.warns(FutureWarning, match="'mat5' is now called 'mat'"):
        assert detect_format(v5) == "mat5"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert detect_format(v5) != "mat73" and detect_format(h5) != "npy"  # other names: no warning, not equal
        assert {detect_format(h5): 1}["h5"] == 1
    with pytest.warns(FutureWarning, match="'hdf5' is now called 'h5'"):
        save_cube(tmp_path / "y.bin", cube, format="hdf5")
    assert detect_format(tmp_path / "y.bin") == "h5"
    with pytest.warns(FutureWarning, match="'mat73' is now called 'mat'"):
        path = save_cube(tmp_path / "y.mat", cube, format="mat73")
    assert path.read_bytes().startswith(b"MATLAB 7.3")  # the old name keeps its meaning: the v7.3 container


# ----------------------------------------------------------------------------------------------------------------------
# Crashes: nothing half-written under a final name
# ----------------------------------------------------------------------------------------------------------------------

KILLED_WRITER = """
import os, signal, sys
import numpy as np
from hsr_diffusers.data.io import CubeWriter
writers = [CubeWriter(path, (40, 30, 31), np.arange(31) + 400.0) for path in sys.argv[1:]]
for writer in writers:
    writer.write_rows(0, np.ones((20, 30, 31)))  # half the rows
os.kill(os.getpid(), signal.SIGKILL)  # what an out-of-memory kill sends
"""


def test_a_writer_killed_mid_cube_leaves_no_file_under_the_final_name(tmp_path):
    paths = [tmp_path / f"x{suffix}" for suffix in sorted(set(SAVE_SUFFIXES.values()))]
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, *map(str, paths)], capture_output=True)
    assert result.returncode == -9, result.stderr.decode()
    finals = {file for path in paths for file in cube_file_paths(path)}
    left = set(tmp_path.iterdir())
    assert not left & finals
    assert all(file.name.startswith(".x.partial") for file in left)  # only hidden temporary names
    # Writing again starts the temporary files from scratch and gives complete cubes.
    cube = smooth_cube(40, 30, 31)
    for path in paths:
        save_cube(path, cube, WAVELENGTHS)
        np.testing.assert_array_equal(load_cube(path), cube)
    assert set(tmp_path.iterdir()) == finals


def test_overwrite_replaces_only_a_complete_cube(tmp_path, cube):
    path = save_cube(tmp_path / "x.npy", cube, WAVELENGTHS)
    with pytest.raises(RuntimeError):
        with CubeWriter(path, cube.shape, overwrite=True) as writer:
            writer.write_rows(0, cube[:2] * 0.5)
            assert partial_path(path).exists() and not (tmp_path / ".x.partial.wavelengths.npy").exists()
            raise RuntimeError("the computation failed")
    np.testing.assert_array_equal(load_cube_with_wavelengths(path)[1], WAVELENGTHS)  # the old cube, untouched
    np.testing.assert_array_equal(load_cube(path), cube)
    # A complete replacement without wavelengths removes the old cube's sidecar instead of pairing it with the new one.
    save_cube(path, cube * 0.5, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
    assert load_cube_with_wavelengths(path)[1] is None
