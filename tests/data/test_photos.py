"""`read_photo`, the one photo reader of the command line and the demo, on files written by the tests themselves."""

import io
import struct
import zlib

import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
import tifffile

from hsr_diffusers.data import PhotoError, read_photo


RGB = np.random.default_rng(0).integers(0, 256, size=(4, 6, 3), dtype=np.uint8)


def write_png16(path, array: np.ndarray) -> None:
    """A 16-bit RGB/RGBA PNG written byte by byte (Pillow cannot write one)."""
    height, width, channels = array.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def error_for(photo, **kwargs) -> str:
    with pytest.raises(PhotoError) as info:
        read_photo(photo, **kwargs)
    message = str(info.value)
    assert "/" not in message  # one sentence about the image, never the server's or user's path
    return message


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pillow_applies_it(tmp_path, orientation):
    image = PIL.Image.fromarray(RGB)
    exif = image.getexif()
    exif[0x0112] = orientation
    for name in ("photo.jpg", "photo.png"):
        image.save(tmp_path / name, exif=exif, quality=100)
        with PIL.Image.open(tmp_path / name) as opened:
            expected = np.asarray(PIL.ImageOps.exif_transpose(opened))
        np.testing.assert_array_equal(read_photo(tmp_path / name), expected)
    # A TIFF says it with its Orientation tag (274), which the 16-bit and float paths honour the same way.
    tifffile.imwrite(tmp_path / "photo.tif", RGB, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    np.testing.assert_array_equal(read_photo(tmp_path / "photo.tif"), expected)


def test_16_bit_png_and_tiff_keep_16_bits_and_opaque_alpha_is_dropped(tmp_path):
    deep = np.random.default_rng(1).integers(0, 65536, size=(5, 7, 3), dtype=np.uint16)
    write_png16(tmp_path / "deep.png", deep)
    write_png16(tmp_path / "deep_rgba.png", np.dstack([deep, np.full((5, 7), 65535, np.uint16)]))
    tifffile.imwrite(tmp_path / "deep.tif", deep, photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(deep, -1, 0), photometric="rgb", planarconfig="separate")
    for name in ("deep.png", "deep_rgba.png", "deep.tif", "planar.tif"):
        photo = read_photo(tmp_path / name)
        assert photo.dtype == np.uint16, name
        np.testing.assert_array_equal(photo, deep)
    float_rgb = deep.astype(np.float32) / 65535
    tifffile.imwrite(tmp_path / "float.tif", float_rgb, photometric="rgb")
    np.testing.assert_array_equal(read_photo(tmp_path / "float.tif"), float_rgb)


def test_the_content_decides_and_pil_images_are_read_too(tmp_path):
    PIL.Image.fromarray(RGB).save(tmp_path / "really_a_png.jpg", format="PNG")
    np.testing.assert_array_equal(read_photo(tmp_path / "really_a_png.jpg"), RGB)
    np.testing.assert_array_equal(read_photo(PIL.Image.fromarray(RGB)), RGB)
    palette = PIL.Image.fromarray(RGB).convert("P")
    np.testing.assert_array_equal(read_photo(palette), np.asarray(palette.convert("RGB")))


def test_size_limit_is_checked_before_decoding(tmp_path):
    PIL.Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "big.png")
    data = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:60])  # the header only: decoding would fail
    for name in ("big.png", "cut.png"):
        assert "50×40 (0.0 MP); at most 0.001 MP" in error_for(tmp_path / name, max_megapixels=0.001)
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((40, 50, 3), np.uint8), photometric="rgb")
    assert "50×40" in error_for(tmp_path / "big.tif", max_megapixels=0.001)
    assert read_photo(tmp_path / "big.png", max_megapixels=0.002).shape == (40, 50, 3)


def test_pillow_decompression_bomb_limit_gives_a_clear_error(tmp_path, monkeypatch):
    PIL.Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # 2000 pixels are now more than twice the limit
    assert "too many pixels to open" in error_for(tmp_path / "bomb.png")


def test_unusable_images_give_one_clear_sentence(tmp_path):
    PIL.Image.fromarray(RGB[..., 0]).save(tmp_path / "gray.png")
    write_png16(tmp_path / "gray16.png", np.zeros((4, 6, 3), np.uint16))  # fine: RGB, all black
    rgba = np.dstack([RGB, np.full((4, 6), 255, np.uint8)])
    rgba[0, 0, 3] = 0
    PIL.Image.fromarray(rgba).save(tmp_path / "transparent.png")
    PIL.Image.fromarray(RGB).convert("CMYK").save(tmp_path / "cmyk.jpg")
    tifffile.imwrite(tmp_path / "cmyk.tif", np.zeros((4, 6, 4), np.uint8), photometric="separated")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    PIL.Image.fromarray(noise).save(tmp_path / "cut.jpg", quality=95)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "cut.jpg").read_bytes()[:1500])  # header kept, pixels cut
    (tmp_path / "cut.tif").write_bytes(b"II*\x00" + b"\x00" * 4)
    assert "grayscale" in error_for(tmp_path / "gray.png")
    assert "grayscale" in error_for(PIL.Image.fromarray(RGB[..., 0]))
    assert "RGBA with transparent pixels" in error_for(tmp_path / "transparent.png")
    assert "CMYK" in error_for(tmp_path / "cmyk.jpg") and "CMYK" in error_for(tmp_path / "cmyk.tif")
    assert "corrupt or not an image file" in error_for(tmp_path / "corrupt.png")
    assert "truncated or corrupt" in error_for(tmp_path / "cut.jpg")
    assert "truncated or corrupt" in error_for(tmp_path / "cut.tif")
    assert "no such file" in error_for(tmp_path / "missing.png")
    assert read_photo(tmp_path / "gray16.png").shape == (4, 6, 3)
    assert isinstance(PhotoError("x"), ValueError)  # callers that caught ValueError still do


def test_truncated_png_is_refused_not_padded(tmp_path):
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert "truncated or corrupt" in error_for(tmp_path / "cut.png")
