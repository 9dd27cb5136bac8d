import pytest
import torch

from hsr_diffusers.models import PatchDiscriminator, PixelDiscriminator


def _receptive_field(model, height, width, row, col):
    # Height and width of the input region that a single output logit depends on, measured by back-propagation.
    # Eval mode: in training mode BatchNorm statistics would connect every pixel to every logit.
    model.eval()
    sample = torch.rand(1, model.config.in_channels, height, width, requires_grad=True)
    model(sample).sample[0, 0, row, col].backward()
    mask = sample.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_defaults_score_rgb_plus_31_bands():
    assert PixelDiscriminator(ndf=2).config.in_channels == 34
    assert PatchDiscriminator(ndf=2).config.in_channels == 34


@pytest.mark.parametrize("norm_type", ["batch", "instance"])
def test_pixel_discriminator_judges_each_pixel_alone(norm_type):
    torch.manual_seed(0)
    model = PixelDiscriminator(ndf=4, norm_type=norm_type)
    assert model(torch.rand(3, 34, 7, 5)).sample.shape == (3, 1, 7, 5)
    if norm_type == "batch":  # instance norm mixes pixels through the per-image statistics, by design
        assert _receptive_field(model, 6, 6, 2, 3) == (1, 1)


def test_patch_discriminator_is_70x70():
    torch.manual_seed(0)
    model = PatchDiscriminator(ndf=2)
    assert _receptive_field(model, 160, 160, 8, 8) == (70, 70)


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4])
def test_patch_discriminator_output_size(n_layers):
    torch.manual_seed(0)
    model = PatchDiscriminator(ndf=2, n_layers=n_layers).eval()
    for height, width in [(48, 64), (53, 71)]:
        height, width = max(height, 3 * 2**n_layers), max(width, 3 * 2**n_layers)
        logits = model(torch.rand(2, 34, height, width)).sample
        # n_layers stride-2 4x4 convolutions (floor(H / 2) each), then two stride-1 4x4 ones (-1 each).
        assert logits.shape == (2, 1, height // 2**n_layers - 2, width // 2**n_layers - 2)


def test_patch_discriminator_too_small_raises():
    model = PatchDiscriminator(ndf=2)
    model(torch.rand(1, 34, 24, 24))  # smallest valid size: one logit
    with pytest.raises(ValueError, match=">= 24"):
        model(torch.rand(1, 34, 23, 64))


def test_bad_norm_type_raises():
    with pytest.raises(ValueError, match="norm_type"):
        PixelDiscriminator(norm_type="none")
    with pytest.raises(ValueError, match="norm_type"):
        PatchDiscriminator(norm_type="spectral")
