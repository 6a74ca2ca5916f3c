"""Network presets: shapes, the paper configuration, tiling-safe (local) normalisation."""
from __future__ import annotations

import pytest
import torch

from dxr_core.errors import OptionError
from dxr_core.models import PRESETS, build_model, count_parameters, get_config


@pytest.mark.parametrize("preset", ["tiny", "pu-small", "monai-tiny"])
def test_forward_shapes(preset):
    net = build_model(preset).eval()
    m = net.multiple
    x = torch.randn(2, 2, 2 * m, 3 * m)
    with torch.no_grad():
        y = net(x, torch.tensor([0.0, 999.0]))
    assert y.shape == (2, 1, 2 * m, 3 * m)


def test_paper_preset_matches_publication():
    cfg = get_config("paper")
    assert cfg.arch == "monai" and cfg.channels == tuple(16 * k for k in (1, 2, 4, 8, 16, 32, 32, 32))
    assert cfg.attention_levels == (False,) * 7 + (True,) and cfg.in_channels == 2
    from monai.networks.nets import DiffusionModelUNet

    net = build_model("paper")
    assert isinstance(net.net, DiffusionModelUNet) and net.multiple == 128


def test_shipping_size_and_unknown_preset():
    assert count_parameters(build_model("pu-small")) * 2 < 20e6  # fp16 checkpoint < 20 MB
    with pytest.raises(OptionError, match="preset"):
        build_model("huge")
    assert set(PRESETS) >= {"tiny", "pu-small", "paper"}


def test_pu_net_is_local():
    """Per-pixel normalisation: a far-away change does not alter the output (unlike GroupNorm) -> tiles agree."""
    torch.manual_seed(0)
    net = build_model("tiny").eval()
    for p in net.parameters():  # random (non-zero) weights everywhere
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(1, 2, 128, 128)
    x2 = x.clone()
    x2[..., 100:, 100:] += 5.0
    with torch.no_grad():
        a, b = net(x, torch.tensor([10.0])), net(x2, torch.tensor([10.0]))
    assert torch.allclose(a[..., :40, :40], b[..., :40, :40], atol=1e-5)
