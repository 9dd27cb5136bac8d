import pytest
import torch
from torch import nn

from hsr_diffusers.models import HSRPixelGANGenerator


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_unet_256_matches_pix2pix_parameter_count():
    # pix2pix prints "[Network G] Total number of parameters : 54.414 M" for unet_256, 3 -> 3 channels, batch norm.
    torch.manual_seed(0)
    model = HSRPixelGANGenerator(in_channels=3, out_channels=3, num_downs=8, ngf=64, norm_type="batch")
    assert _count(model) == 54_413_955
    assert round(_count(model) / 1e6, 3) == 54.414
    # pix2pix-style nesting: `model.model.<i>` at every level, so pix2pix state dicts load unchanged.
    assert "model.model.0.weight" in model.state_dict()  # outermost down-convolution
    # Dropout sits in the num_downs - 5 = 3 middle ngf*8 levels only.
    dropout_model = HSRPixelGANGenerator(num_downs=8, ngf=1, use_dropout=True)
    assert sum(isinstance(m, nn.Dropout) for m in dropout_model.modules()) == 3


def _expected_parameter_count(in_channels, out_channels, num_downs, ngf, norm_type):
    # Independent count of the pix2pix U-Net: per level a 4x4 down-conv and a 4x4 up-conv (weights + optional bias)
    # plus the affine BatchNorm parameters.
    widths = [ngf * min(2**i, 8) for i in range(num_downs)]
    batch = norm_type == "batch"
    total = 0
    for level in range(num_downs):
        outer = out_channels if level == 0 else widths[level - 1]
        inner = widths[level]
        down_in = in_channels if level == 0 else outer
        up_in = inner if level == num_downs - 1 else 2 * inner
        total += 16 * down_in * inner + (0 if batch else inner)  # down-conv: bias only before instance norm
        total += 16 * up_in * outer + (outer if (level == 0 or not batch) else 0)  # up-conv
        if batch:
            total += 2 * inner * (0 < level < num_downs - 1)  # down norm: not outermost, not innermost
            total += 2 * outer * (level > 0)  # up norm: all but outermost
    return total


@pytest.mark.parametrize("num_downs", [2, 3, 5, 8])
@pytest.mark.parametrize("norm_type", ["batch", "instance"])
def test_parameter_count_formula(num_downs, norm_type):
    model = HSRPixelGANGenerator(in_channels=4, out_channels=7, num_downs=num_downs, ngf=2, norm_type=norm_type)
    assert _count(model) == _expected_parameter_count(4, 7, num_downs, 2, norm_type)


@pytest.mark.parametrize("norm_type", ["batch", "instance"])
def test_no_norm_sees_a_single_pixel(norm_type):
    # With the input exactly 2**num_downs wide the bottleneck is 1x1: instance norm there would zero every feature and
    # batch norm fails for batch size 1. pix2pix gives the innermost block no norm after its down-convolution.
    torch.manual_seed(0)
    model = HSRPixelGANGenerator(num_downs=4, ngf=4, norm_type=norm_type).train()
    norm_input_sizes = []
    for module in model.modules():
        if isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)):
            module.register_forward_hook(lambda m, args, out: norm_input_sizes.append(args[0].shape[-2:].numel()))
    out = model(torch.rand(1, 3, 16, 16) * 2 - 1).sample
    assert len(norm_input_sizes) == 2 * 4 - 3  # down norms on 2 middle levels, up norms on 3 inner levels
    assert min(norm_input_sizes) == 4  # the smallest normalised map is 2x2
    assert torch.isfinite(out).all()


def test_bottleneck_carries_information():
    # The deepest path must not be a constant: perturbing the innermost features changes the output.
    torch.manual_seed(0)
    model = HSRPixelGANGenerator(num_downs=3, ngf=4).eval()
    innermost = model.model.model[1].model[3].model  # outermost -> level 1 -> innermost Sequential
    assert [type(m) for m in innermost[:3]] == [nn.LeakyReLU, nn.Conv2d, nn.ReLU]  # no norm on the 1x1 map
    sample = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        reference = model(sample).sample
        innermost[1].bias.add_(1.0)  # the 1x1 bottleneck down-convolution
        changed = model(sample).sample
    assert (reference - changed).abs().max() > 1e-4


def test_output_is_tanh_bounded_and_weights_follow_init_gain():
    torch.manual_seed(0)
    model = HSRPixelGANGenerator(num_downs=3, ngf=8, init_gain=0.5).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 16, 24) * 2 - 1).sample
    assert out.abs().max() <= 1.0 and out.abs().max() > 0.5  # large init gain: Tanh saturates
    conv_weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Conv2d)])
    assert abs(conv_weights.std().item() - 0.5) < 0.05
    conv_biases = [m.bias for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert conv_biases and all(torch.count_nonzero(b) == 0 for b in conv_biases)


def test_sigmoid_tanh_is_tanh_and_the_output_layer():
    from hsr_diffusers.models.pixelgan_generator import SigmoidTanh

    x = torch.linspace(-20, 20, 400_001)
    assert (SigmoidTanh()(x) - torch.tanh(x.double()).float()).abs().max() <= 2e-7
    # Replacing it by nn.Tanh changes the generator's output by no more than that.
    torch.manual_seed(0)
    model = HSRPixelGANGenerator(num_downs=3, ngf=8, init_gain=0.5).eval()
    sample = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        fast = model(sample).sample
        assert isinstance(model.model.model[-1], SigmoidTanh)
        model.model.model[-1] = nn.Tanh()
        exact = model(sample).sample
    assert (fast - exact).abs().max() <= 2e-7


def test_instance_norm_layer_is_instance_norm_without_state():
    from hsr_diffusers.models.pixelgan_generator import norm_layer

    x = torch.randn(3, 8, 5, 7) * 3 + 1
    layer = norm_layer("instance", 8)
    torch.testing.assert_close(layer(x), nn.InstanceNorm2d(8)(x), rtol=0, atol=1e-5)
    assert not list(layer.parameters()) and not list(layer.buffers())


def test_bad_config_raises():
    with pytest.raises(ValueError, match="num_downs"):
        HSRPixelGANGenerator(num_downs=1)
    with pytest.raises(ValueError, match="norm_type"):
        HSRPixelGANGenerator(num_downs=3, ngf=2, norm_type="group")


def test_downsample_factor_error_message():
    model = HSRPixelGANGenerator(num_downs=3, ngf=2)
    assert model.downsample_factor == 8
    with pytest.raises(ValueError, match=r"multiples of 2\*\*num_downs = 8, got 12x8"):
        model(torch.zeros(1, 3, 12, 8))
