"""`hsr_diffusers.pipelines.tiling`: the tiles, their groups and the row-by-row blend."""

import pytest
import torch

from hsr_diffusers import WAVELENGTHS, HSRImageProcessor
from hsr_diffusers.pipelines.tiling import NOISE_BLOCK, Tiler, concatenate_rows, position_noise


@pytest.fixture
def processor():
    return HSRImageProcessor(WAVELENGTHS, "cie1964_ntire2020")


@pytest.mark.parametrize("tile_size, batch_pixels", [(None, 1), (16, 1), (16, 3 * 16 * 16 * 2), (24, 10**6)])
def test_rows_equal_the_whole_image_blend(processor, tile_size, batch_pixels):
    # Every tile gets its own random values: the rows handed out group by group equal the blend of the whole image.
    height, width, copies = 50, 37, 2
    tiler = Tiler(processor, height, width, tile_size, 4, multiple=8, copies=copies, batch_pixels=batch_pixels)
    generator = torch.Generator().manual_seed(0)
    sums, weights = torch.zeros(copies, 3, height, width), torch.zeros(1, 1, height, width)
    blocks, expected_top = [], 0
    for group in tiler.groups():
        assert len(group.tiles) <= tiler.group_size
        outputs = torch.rand(len(group.tiles) * copies, 3, tiler.tile_height, tiler.tile_width, generator=generator)
        for (top, left, weight), tile in zip(group.tiles, outputs.split(copies)):
            sums[..., top : top + tiler.tile_height, left : left + tiler.tile_width].addcmul_(tile, weight)
            weights[..., top : top + tiler.tile_height, left : left + tiler.tile_width] += weight
        top, rows = tiler.blend(group, outputs)
        assert top == expected_top and rows.shape[:2] == (copies, 3) and rows.shape[-1] == width
        expected_top += rows.shape[2]
        blocks.append(rows)
    assert expected_top == height
    torch.testing.assert_close(concatenate_rows(blocks), sums / weights, rtol=0, atol=0)


def test_groups_fill_the_batch_and_crop_stacks_tile_major(processor):
    tiler = Tiler(processor, 40, 40, 16, 4, multiple=8, copies=2, batch_pixels=2 * 16 * 16 * 2)
    groups = list(tiler.groups())
    assert [len(g.tiles) for g in groups] == [2] * (len(tiler) // 2) + [1] * (len(tiler) % 2)
    image = torch.arange(2 * 40 * 40, dtype=torch.float32).view(2, 1, 40, 40)
    crops = tiler.crop(image, groups[0])
    (top, left, _), (top2, left2, _) = groups[0].tiles
    torch.testing.assert_close(crops[1], image[1, :, top : top + 16, left : left + 16])
    torch.testing.assert_close(crops[2], image[0, :, top2 : top2 + 16, left2 : left2 + 16])


def test_position_noise_is_a_function_of_position():
    whole = position_noise(7, 1, 0, 0, 2 * NOISE_BLOCK, NOISE_BLOCK + 5, 3)
    part = position_noise(7, 1, 30, 20, 70, 40, 3)
    torch.testing.assert_close(part, whole[:, 30:100, 20:60], rtol=0, atol=0)
    assert not torch.equal(position_noise(7, 0, 30, 20, 70, 40, 3), part)  # another sample, other noise


def test_old_import_path_of_position_noise():
    from hsr_diffusers.pipelines.hsr_diffusion.pipeline_hsr_diffusion import position_noise as old

    assert old is position_noise
