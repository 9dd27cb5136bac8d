"""Reading RGB photos: the one reader behind `hsr reconstruct` and the demo.

[`read_photo`] turns a PNG, JPEG, TIFF or WebP file (or an opened PIL image) into the `(H, W, 3)` array that the
pipelines' image processor takes: `uint8`, `uint16` for 16-bit files (all 16 bits kept, which Pillow alone cannot do
for RGB), or float for float TIFFs. It applies the EXIF/TIFF orientation, can refuse images above a size before
decoding them, and raises one [`PhotoError`] with a one-sentence reason for everything else: a file that is not an
image, a truncated one, grayscale, CMYK, transparent pixels.
"""

import os
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps


__all__ = ["PHOTO_SUFFIXES", "PhotoError", "read_photo"]

# Suffixes that `hsr reconstruct` takes from a folder. `read_photo` itself goes by the content.
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")
# What Pillow raises for files it cannot open or decode.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError)
# EXIF/TIFF orientation tag values to the numpy operation that shows the image upright (as `ImageOps.exif_transpose`).
_ORIENTATIONS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


class PhotoError(ValueError):
    """A file or image that cannot be used as an RGB photo. The message is one sentence and never names the path."""


def read_photo(photo: str | os.PathLike | PIL.Image.Image, max_megapixels: float | None = None) -> np.ndarray:
    r"""
    Reads an RGB photo as an array for `pipe.image_processor.preprocess` (or any pipeline call).

    Args:
        photo (`str`, `os.PathLike` or `PIL.Image.Image`):
            A PNG (8 or 16 bit), JPEG, TIFF (8, 16 bit or float, band-last or planar) or any other image Pillow opens,
            or an opened PIL image. The content decides the decoder, not the suffix.
        max_megapixels (`float`, *optional*):
            Refuse larger images, before their pixels are decoded. Pillow's own decompression-bomb limit
            (`PIL.Image.MAX_IMAGE_PIXELS`) applies in any case.

    Returns:
        `np.ndarray`: `(H, W, 3)`, upright (EXIF or TIFF orientation applied): `uint8`, `uint16` for 16-bit files, or
        the float dtype of a float TIFF. A fully opaque alpha channel is dropped.

    Raises:
        [`PhotoError`]: not an image or unreadable, truncated, too large, grayscale, CMYK, or with transparent pixels.
    """
    if isinstance(photo, PIL.Image.Image):
        array = _from_pil(photo, max_megapixels)
    else:
        path = Path(photo)
        if not path.is_file():
            raise PhotoError("There is no such file." if not path.exists() else "It is a folder, not an image file.")
        with open(path, "rb") as file:
            is_tiff = file.read(4) in _TIFF_MAGICS
        array = _read_tiff(path, max_megapixels) if is_tiff else _read_with_pillow(path, max_megapixels)
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 2)):
        raise PhotoError(f"The image is grayscale (shape {array.shape}); an RGB image is needed.")
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise PhotoError(f"The image has shape {array.shape}; an RGB image of shape (H, W, 3) is needed.")
    if array.shape[-1] == 4:
        opaque = np.iinfo(array.dtype).max if array.dtype.kind == "u" else 1.0
        if (array[..., 3] != opaque).any():
            raise PhotoError(
                f"The image is RGBA with transparent pixels (alpha min {array[..., 3].min() / opaque:g}); "
                "flatten it onto a background first."
            )
        array = array[..., :3]
    return np.ascontiguousarray(array)


def _check_size(width: int, height: int, max_megapixels: float | None) -> None:
    megapixels = width * height / 1e6
    if max_megapixels is not None and megapixels > max_megapixels:
        raise PhotoError(
            f"The image is {width}×{height} ({megapixels:.1f} MP); at most {max_megapixels:g} MP are accepted. "
            "Resize it and try again."
        )


def _orient(array: np.ndarray, orientation: int | None) -> np.ndarray:
    return _ORIENTATIONS.get(orientation, lambda a: a)(array)


def _read_with_pillow(path: Path, max_megapixels: float | None) -> np.ndarray:
    try:
        image = PIL.Image.open(path)
    except PIL.Image.DecompressionBombError as error:
        raise PhotoError(f"The image has too many pixels to open safely ({error}).") from error
    except _PIL_ERRORS as error:
        raise PhotoError(
            "Cannot read the file as an image: it is corrupt or not an image file "
            f"({type(error).__name__}: {str(error).replace(str(path), path.name)})."
        ) from error
    with image:
        if image.format == "PNG" and image.tile and image.tile[0][3] in ("RGB;16B", "RGBA;16B"):
            _check_size(*image.size, max_megapixels)
            orientation = image.getexif().get(0x0112)
            return _orient(_read_png16(path), orientation)
        return _from_pil(image, max_megapixels)


def _from_pil(image: PIL.Image.Image, max_megapixels: float | None) -> np.ndarray:
    _check_size(*image.size, max_megapixels)
    mode = image.mode
    if mode in _GRAYSCALE_MODES:
        raise PhotoError(f"The image is grayscale (PIL mode {mode}); an RGB image is needed.")
    if mode == "CMYK":
        raise PhotoError("The image is CMYK; convert it to RGB first.")
    try:
        image.load()
        image = PIL.ImageOps.exif_transpose(image)
        if mode == "P":
            image = image.convert("RGBA")  # a palette may have transparent entries
        elif mode not in ("RGB", "RGBA"):
            image = image.convert("RGB")
        return np.asarray(image)
    except _PIL_ERRORS as error:
        raise PhotoError(f"Cannot decode the image: the file is truncated or corrupt ({error}).") from error


def _read_png16(path: Path) -> np.ndarray:
    # Pillow has no 16-bit RGB mode: it decodes 48/64-bit PNGs to 8-bit RGB(A), keeping the high byte of each sample
    # (raw mode "RGB;16B"). Decoding a second time with the little-endian unpacker ("RGB;16L") keeps the other byte;
    # the PNG unfiltering (and Adam7 interlacing) is the same in both passes, since it only depends on the bit depth.
    planes = []
    try:
        for byte_order in ("B", "L"):
            with PIL.Image.open(path) as image:
                image.tile = [(*tile[:3], tile[3][:-1] + byte_order) for tile in image.tile]
                image.load()
                planes.append(np.asarray(image).astype(np.uint16))
    except _PIL_ERRORS as error:
        raise PhotoError(f"Cannot decode the image: the file is truncated or corrupt ({error}).") from error
    return planes[0] << 8 | planes[1]  # (H, W, 3 or 4)


def _read_tiff(path: Path, max_megapixels: float | None) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            _check_size(page.imagewidth, page.imagelength, max_megapixels)
            if page.photometric == tifffile.PHOTOMETRIC.SEPARATED:
                raise PhotoError("The image is CMYK; convert it to RGB first.")
            array = page.asarray()
            if array.ndim == 3 and page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
                array = np.moveaxis(array, 0, -1)  # (C, H, W) -> (H, W, C)
            orientation = page.tags.valueof(274)  # Orientation
    except PhotoError:
        raise
    except Exception as error:  # tifffile raises TiffFileError, ValueError, OSError... for damaged files
        raise PhotoError(f"Cannot decode the TIFF image: the file is truncated or corrupt ({error}).") from error
    return _orient(array, orientation)
