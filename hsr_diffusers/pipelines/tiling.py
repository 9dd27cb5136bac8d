"""Tiled inference shared by the HSR pipelines: split an image into overlapping tiles, batch small tiles into one
network call, make the diffusion noise a function of pixel position, and blend the results into rows that are handed
on as soon as no later tile covers them."""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from hsr_diffusers.image_processor import HSRImageProcessor


# Small tiles are stacked into one network call up to this many pixels (those of one 256x256 tile): a call on a
# 64-pixel tile is dominated by per-layer overhead, so stacking is faster per tile with no more memory than such a tile.
TILE_BATCH_PIXELS = 256 * 256
# Side of the blocks the position noise is drawn in (see `position_noise`).
NOISE_BLOCK = 64


def position_noise(
    seed: int, sample: int, top: int, left: int, height: int, width: int, channels: int
) -> torch.Tensor:
    """
    Gaussian noise `[channels, height, width]` for the image region starting at (`top`, `left`), as a fixed function of
    the pixel position: the image plane is cut into `NOISE_BLOCK`-sized blocks, each drawn from its own seeded generator.
    Overlapping tiles therefore see the same noise on the pixels they share, and a tiled run equals an untiled one when
    the image fits one tile.
    """
    noise = torch.empty(channels, height, width)
    for block_y in range(top // NOISE_BLOCK, (top + height - 1) // NOISE_BLOCK + 1):
        for block_x in range(left // NOISE_BLOCK, (left + width - 1) // NOISE_BLOCK + 1):
            block_seed = (seed * 1_000_003 + sample * 10_007 + block_y * 101 + block_x) % (2**63)
            block = torch.randn(
                channels, NOISE_BLOCK, NOISE_BLOCK, generator=torch.Generator().manual_seed(block_seed)
            )
            y0, x0 = block_y * NOISE_BLOCK, block_x * NOISE_BLOCK
            ys, ye = max(top, y0), min(top + height, y0 + NOISE_BLOCK)
            xs, xe = max(left, x0), min(left + width, x0 + NOISE_BLOCK)
            noise[:, ys - top : ye - top, xs - left : xe - left] = block[:, ys - y0 : ye - y0, xs - x0 : xe - x0]
    return noise


@dataclass
class TileGroup:
    """Tiles run in one network call: their `(top, left, weight)`, and the first image row a later group still covers
    (rows above it are final once this group is blended)."""

    tiles: list[tuple[int, int, torch.Tensor]]
    final_row: int


class Tiler:
    r"""
    Splits images of one size into overlapping tiles of one size (the geometry of
    [`~HSRImageProcessor.tiles`]), groups them so that a group fills about `batch_pixels` per network call, and blends
    the results with the tiles' weights into rows: each group hands back the rows no later tile covers, so only a strip
    of rows is ever held.

    Args:
        image_processor ([`HSRImageProcessor`]): gives the tile geometry and blending weights.
        height (`int`), width (`int`): image size.
        tile_size (`int`, *optional*): tile side; `None` runs the image as one tile.
        tile_overlap (`int`): overlap between tiles in pixels.
        multiple (`int`): the network's downsampling factor; tiles are padded to a multiple of it.
        copies (`int`, *optional*, defaults to 1): network inputs per tile (images times samples), which count
            towards `batch_pixels`.
        batch_pixels (`int`, *optional*, defaults to `TILE_BATCH_PIXELS`): padded pixels per network call that tiles
            are stacked up to (at least one tile per call).
    """

    def __init__(
        self,
        image_processor: HSRImageProcessor,
        height: int,
        width: int,
        tile_size: int | None,
        tile_overlap: int,
        multiple: int,
        copies: int = 1,
        batch_pixels: int = TILE_BATCH_PIXELS,
    ):
        self.height, self.width, self.copies = height, width, copies
        tiles = image_processor.tiles(height, width, tile_size, tile_overlap)
        self.tiles = [(top, left, weight) for top, left, _, _, weight in tiles]
        self.tile_height, self.tile_width = min(tile_size or height, height), min(tile_size or width, width)
        self.padded_height = self.tile_height + (-self.tile_height % multiple)
        self.padded_width = self.tile_width + (-self.tile_width % multiple)
        self.group_size = max(1, batch_pixels // (self.padded_height * self.padded_width * copies))
        self._sums = self._weights = None
        self._top = 0  # image row of the first row held

    def __len__(self) -> int:
        return len(self.tiles)

    def groups(self) -> Iterator[TileGroup]:
        """The tiles in row-major order, `group_size` at a time."""
        for first in range(0, len(self.tiles), self.group_size):
            after = first + self.group_size
            yield TileGroup(self.tiles[first:after], self.tiles[after][0] if after < len(self.tiles) else self.height)

    def crop(self, image: torch.Tensor, group: TileGroup, padded: bool = False) -> torch.Tensor:
        """The tiles of `group` cut from `image` `[B, C, H, W]`, stacked tile-major: `[K * B, C, h, w]` (the padded size
        when `padded`, for noise that covers the padding)."""
        height, width = (self.padded_height, self.padded_width) if padded else (self.tile_height, self.tile_width)
        return torch.cat([image[..., top : top + height, left : left + width] for top, left, _ in group.tiles])

    def position_noise(self, group: TileGroup, seeds: list[int], num_samples: int, channels: int) -> torch.Tensor:
        """Initial noise `[K * N * S, channels, h', w']` of the padded tiles of `group` for the images seeded with
        `seeds`, tile-major, then image, then sample (the order of `crop` after `repeat_interleave(num_samples)`)."""
        noise = [
            position_noise(seed, sample, top, left, self.padded_height, self.padded_width, channels)
            for top, left, _ in group.tiles
            for seed in seeds
            for sample in range(num_samples)
        ]
        return torch.stack(noise)

    def blend(self, group: TileGroup, outputs: torch.Tensor) -> tuple[int, torch.Tensor]:
        """
        Adds the network's `outputs` `[K * copies, C, h, w]` for the tiles of `group` with their weights, and returns
        the rows that are now final: `(top, rows)` with `rows` `[copies, C, r, W]` (`r` may be 0), float32 on the CPU.
        """
        outputs = outputs.cpu().float()
        if self._sums is None:
            self._sums = outputs.new_zeros(self.copies, outputs.shape[1], 0, self.width)
            self._weights = outputs.new_zeros(1, 1, 0, self.width)
        for (top, left, weight), tile in zip(group.tiles, outputs.split(self.copies)):
            rows = top + self.tile_height - self._top
            if rows > self._sums.shape[2]:  # the tile reaches below the rows held
                self._sums, self._weights = self._extended(self._sums, rows), self._extended(self._weights, rows)
            row = top - self._top
            self._sums[..., row : row + self.tile_height, left : left + self.tile_width].addcmul_(tile, weight)
            self._weights[..., row : row + self.tile_height, left : left + self.tile_width] += weight
        count, top = group.final_row - self._top, self._top
        finished = self._sums[..., :count, :] / self._weights[..., :count, :]
        self._sums, self._weights = self._sums[..., count:, :], self._weights[..., count:, :]
        self._top = group.final_row
        return top, finished

    @staticmethod
    def _extended(held: torch.Tensor, rows: int) -> torch.Tensor:
        """`held` `[..., r, W]` followed by zero rows up to `rows`, in one new tensor (one write of each row, where a
        `torch.cat` with new zeros wrote the new rows twice)."""
        extended = held.new_empty(*held.shape[:2], rows, held.shape[3])
        extended[..., : held.shape[2], :].copy_(held)
        extended[..., held.shape[2] :, :].zero_()
        return extended


def concatenate_rows(blocks: list[np.ndarray | torch.Tensor | None]) -> np.ndarray | torch.Tensor | None:
    """Joins the row blocks `Tiler.blend` handed out (numpy `(N, r, W, C)` or torch `[N, C, r, W]`) into images, or
    gives `None` when a block was dropped (`None`)."""
    if any(block is None for block in blocks):
        return None
    if isinstance(blocks[0], np.ndarray):
        return np.concatenate(blocks, axis=1)
    return torch.cat(blocks, dim=2)
