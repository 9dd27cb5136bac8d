"""Contract tests run on every model class with tiny configs (timm `test_model_forward` style).

Every model returns an `HSRModelOutput` from `forward(sample, return_dict)` (or the tuple `(sample,)`). The feed-forward
models (generator, AWAN, MST++, root-polynomial regression) take RGB in `[-1, 1]` first, give a `sample` of
`[N, out_channels, H, W]` and have an int `downsample_factor`; the discriminators give one logit map. Every model must
survive `save_pretrained` -> `from_pretrained` exactly.
"""

import json

import pytest
import torch

from hsr_diffusers.models import (
    AWAN,
    HSRModelOutput,
    HSRPixelGANGenerator,
    MSTPlusPlus,
    PatchDiscriminator,
    PixelDiscriminator,
    PixelMLP,
    RootPolynomialRegression,
)
from tests.testing_utils import floats_tensor


# (id, class, tiny config, input height, input width)
FEED_FORWARD_CASES = [
    ("gan_instance_1x1_bottleneck", HSRPixelGANGenerator, dict(num_downs=3, ngf=4, norm_type="instance"), 8, 8),
    (
        "gan_batch_dropout",
        HSRPixelGANGenerator,
        dict(num_downs=6, ngf=2, norm_type="batch", use_dropout=True),
        64,
        128,
    ),
    ("gan_extra_cond_16_bands", HSRPixelGANGenerator, dict(in_channels=5, out_channels=16, num_downs=2, ngf=4), 8, 4),
    ("awan", AWAN, dict(num_channels=8, num_blocks=2), 12, 10),
    ("awan_odd_size_16_bands", AWAN, dict(in_channels=4, out_channels=16, num_channels=8, num_blocks=1), 7, 9),
    ("mst_plus_plus", MSTPlusPlus, dict(out_channels=8, num_stages=1), 16, 8),
    ("mst_plus_plus_extra_cond", MSTPlusPlus, dict(in_channels=4, out_channels=12, num_stages=2), 8, 16),
    ("root_poly_deg1", RootPolynomialRegression, dict(degree=1), 5, 6),
    ("root_poly_deg2", RootPolynomialRegression, dict(degree=2, out_channels=7), 5, 6),
    ("root_poly_deg3_extra_cond", RootPolynomialRegression, dict(degree=3, in_channels=5), 3, 4),
    ("pixel_mlp", PixelMLP, dict(hidden_channels=[8, 8]), 5, 7),
    ("pixel_mlp_log_brightness_extra_cond", PixelMLP, dict(in_channels=34, use_log_brightness=True), 4, 3),
]

# Discriminators score torch.cat([rgb, cube], 1) and return logits in `sample`.
DISCRIMINATOR_CASES = [
    ("pixel_batch", PixelDiscriminator, dict(ndf=4, norm_type="batch"), 6, 5),
    ("pixel_instance_16_bands", PixelDiscriminator, dict(in_channels=3 + 16, ndf=4, norm_type="instance"), 6, 5),
    ("patch_batch", PatchDiscriminator, dict(ndf=4, norm_type="batch"), 32, 40),
    ("patch_instance_2_layers", PatchDiscriminator, dict(ndf=4, n_layers=2, norm_type="instance"), 16, 12),
]
ALL_CASES = FEED_FORWARD_CASES + DISCRIMINATOR_CASES


def _build(cls, config):
    torch.manual_seed(0)
    return cls(**config)


def _perturb_(model):
    # Moves every parameter off its initial value (AWAN's zero-initialised non-local projection, the unfitted regression
    # matrix), so a round-trip test cannot pass just because a fresh model is initialised the same way.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


def _public_config(model):
    # Drops the bookkeeping keys (`_name_or_path`, `_use_default_values`, ...) that diffusers adds on load.
    return {k: v for k, v in model.config.items() if not k.startswith("_")}


def _input(model, height, width, seed=0):
    return floats_tensor((2, model.config.in_channels, height, width), seed=seed) * 2 - 1


def _forward_output(model, sample):
    """`model(sample).sample`, after checking the diffusers output contract: an `HSRModelOutput`, or with
    `return_dict=False` the tuple of the same one tensor, finite."""
    with torch.no_grad():
        output = model(sample)
        output_tuple = model(sample, return_dict=False)
    assert isinstance(output, HSRModelOutput)
    assert isinstance(output_tuple, tuple) and len(output_tuple) == 1
    assert torch.equal(output_tuple[0], output.sample)
    assert torch.isfinite(output.sample).all()
    return output.sample


@pytest.mark.parametrize(
    "case_id, cls, config, height, width", FEED_FORWARD_CASES, ids=[c[0] for c in FEED_FORWARD_CASES]
)
def test_forward_contract(case_id, cls, config, height, width):
    model = _build(cls, config).eval()
    assert isinstance(model.downsample_factor, int)
    assert height % model.downsample_factor == 0 and width % model.downsample_factor == 0

    output = _forward_output(model, _input(model, height, width))
    assert output.shape == (2, model.config.out_channels, height, width)


@pytest.mark.parametrize(
    "case_id, cls, config, height, width", FEED_FORWARD_CASES, ids=[c[0] for c in FEED_FORWARD_CASES]
)
def test_forward_has_gradients(case_id, cls, config, height, width):
    # Every model, the regression included, can be trained or fine-tuned end to end.
    model = _build(cls, config).train()
    _perturb_(model)
    model(_input(model, height, width)).sample.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    "case_id, cls, config, height, width", DISCRIMINATOR_CASES, ids=[c[0] for c in DISCRIMINATOR_CASES]
)
def test_discriminator_forward(case_id, cls, config, height, width):
    model = _build(cls, config).eval()
    logits = _forward_output(model, _input(model, height, width))
    assert logits.ndim == 4 and logits.shape[:2] == (2, 1)


@pytest.mark.parametrize("case_id, cls, config, height, width", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_save_load_roundtrip(case_id, cls, config, height, width, tmp_path):
    model = _build(cls, config)
    _perturb_(model)
    sample = _input(model, height, width)
    # Two training-mode passes move BatchNorm running statistics away from their (0, 1) defaults.
    model.train()
    with torch.no_grad():
        model(sample)
        model(sample.flip(-1))
    model.eval()

    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    saved_config = json.loads((tmp_path / "config.json").read_text())
    assert saved_config["_class_name"] == cls.__name__
    for key, value in config.items():
        assert saved_config[key] == value

    loaded = cls.from_pretrained(tmp_path)
    assert not loaded.training
    assert _public_config(loaded) == _public_config(model)

    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    for key in state:
        assert torch.equal(state[key], loaded_state[key]), key
    if config.get("norm_type") == "batch":
        running_means = [k for k in state if k.endswith("running_mean")]
        assert running_means and any(state[k].abs().sum() > 0 for k in running_means)

    with torch.no_grad():
        assert torch.equal(model(sample).sample, loaded(sample).sample)


@pytest.mark.parametrize("case_id, cls, config, height, width", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_from_config_roundtrip(case_id, cls, config, height, width):
    model = _build(cls, config)
    rebuilt = cls.from_config(model.config)
    assert _public_config(rebuilt) == _public_config(model)
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [
        (k, v.shape) for k, v in model.state_dict().items()
    ]


@pytest.mark.parametrize("case_id, cls, config, height, width", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_wrong_channel_count_raises(case_id, cls, config, height, width):
    model = _build(cls, config).eval()
    bad = floats_tensor((1, model.config.in_channels + 1, height, width))
    with pytest.raises(ValueError, match="shape"):
        model(bad)
    with pytest.raises(ValueError, match="shape"):
        model(bad[0])  # missing batch axis


@pytest.mark.parametrize(
    "case_id, cls, config, height, width",
    [c for c in FEED_FORWARD_CASES if c[1] in (HSRPixelGANGenerator, MSTPlusPlus)],
    ids=[c[0] for c in FEED_FORWARD_CASES if c[1] in (HSRPixelGANGenerator, MSTPlusPlus)],
)
def test_size_not_multiple_of_downsample_factor_raises(case_id, cls, config, height, width):
    model = _build(cls, config).eval()
    factor = model.downsample_factor
    assert factor > 1
    for bad_height, bad_width in [(height + factor // 2, width), (height, width + 1)]:
        with pytest.raises(ValueError, match="multiple"):
            model(_input(model, bad_height, bad_width))
