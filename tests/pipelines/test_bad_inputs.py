import numpy as np
import pytest
import torch
from PIL import Image

from hsr_diffusers import WAVELENGTHS, HSRImageProcessor


@pytest.fixture
def processor():
    return HSRImageProcessor(WAVELENGTHS, "cie1964_ntire2020")


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((8, 8), dtype=np.uint8), "grayscale"),
        (np.zeros((8, 8, 1), dtype=np.uint8), "grayscale"),
        (Image.new("L", (8, 8)), "grayscale"),
        (Image.new("RGBA", (8, 8), (10, 20, 30, 100)), "transparent"),
        (np.full((8, 8, 3), np.nan, dtype=np.float32), "NaN"),
        (np.full((8, 8, 3), np.inf, dtype=np.float32), "NaN or Inf"),
        (np.full((8, 8, 3), 1.5, dtype=np.float32), r"\[0, 1\]"),
        (np.full((8, 8, 3), -0.1, dtype=np.float64), r"\[0, 1\]"),
        (np.zeros((0, 8, 3), dtype=np.uint8), "empty"),
        (np.zeros((8, 8, 5), dtype=np.uint8), r"\(H, W, 3\)"),
        (np.zeros((8, 8, 3), dtype=np.int32), "dtype"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)], "one size"),
        ([], "empty"),
        (torch.full((1, 3, 4, 4), 2.0), r"\[0, 1\]"),
        (torch.zeros(1, 1, 4, 4), r"\(N, 3, H, W\)"),
        ("photo.png", "unsupported type"),
    ],
)
def test_bad_inputs_raise_clear_errors(processor, image, message):
    with pytest.raises(ValueError, match=message):
        processor.preprocess(image)


def test_opaque_rgba_and_uint16_accepted(processor):
    rgba = Image.new("RGBA", (6, 4), (255, 0, 0, 255))
    assert processor.preprocess(rgba).shape == (1, 3, 4, 6)
    rgb16 = np.full((4, 6, 3), 65535, dtype=np.uint16)
    np.testing.assert_allclose(processor.preprocess(rgb16), 1.0)


def test_tiles_cover_image_and_weights_positive(processor):
    weights = torch.zeros(1, 1, 50, 37)
    for top, left, h, w, weight in processor.tiles(50, 37, 16, 4):
        assert weight.shape == (1, 1, h, w) and weight.min() > 0
        weights[..., top : top + h, left : left + w] += weight
    assert weights.min() > 0
