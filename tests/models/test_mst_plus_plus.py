import pytest
import torch

from hsr_diffusers.models import MSTPlusPlus
from hsr_diffusers.models.mst_plus_plus import SpectralMSA


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_full_size_parameter_count():
    # The MST++ paper reports 1.62 M parameters for 3 stages at 31 bands.
    model = MSTPlusPlus()
    assert _count(model) == 1_619_625
    assert round(_count(model) / 1e6, 2) == 1.62
    assert len(model.body) == 3
    assert _count(MSTPlusPlus(num_stages=1)) < _count(model) / 2


def test_spectral_attention_matches_direct_formula():
    # S-MSA treats each channel as a token: A = softmax(rescale * K_hat^T Q_hat) over d x d per head.
    torch.manual_seed(0)
    heads, dim_head = 2, 4
    attn = SpectralMSA(dim=heads * dim_head, dim_head=dim_head, heads=heads)
    torch.nn.init.uniform_(attn.rescale, 0.5, 2.0)
    x = torch.randn(2, 3, 5, heads * dim_head)  # [B, H, W, C]
    out = attn(x)

    tokens = x.reshape(2, 15, -1)
    q, k, v = (layer(tokens).reshape(2, 15, heads, dim_head) for layer in (attn.to_q, attn.to_k, attn.to_v))
    q_hat, k_hat = q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)  # L2 over pixels
    a = torch.einsum("bnhi,bnhj->bhij", k_hat, q_hat) * attn.rescale  # [B, heads, d, d]
    mixed = torch.einsum("bhij,bnhj->bnhi", a.softmax(-1), v).reshape(2, 15, -1)
    expected = attn.proj(mixed).reshape(x.shape)
    expected = expected + attn.pos_emb(v.reshape(2, 3, 5, -1).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("height, width", [(12, 16), (16, 4), (20, 20)])
def test_not_multiple_of_8_raises(height, width):
    model = MSTPlusPlus(out_channels=4, num_stages=1)
    assert model.downsample_factor == 8
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.zeros(1, 3, height, width))
