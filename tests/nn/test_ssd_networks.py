"""The SSD networks' shortcuts equal the computations they replace."""

import pytest
import torch
from torch import nn

from ppl_scenes.nn.ssd import AnchorEncoder, ConvNormReLU, PyramidBackbone


@pytest.mark.parametrize("hidden", [0, 5])
def test_anchor_encoder_at_equals_the_full_head_at_those_boxes(hidden):
    torch.manual_seed(0)
    encoder = AnchorEncoder([6, 6, 6], [4, 6, 4], dim=3, hidden=hidden)
    features = [torch.randn(2, 6, 8, 8), torch.randn(2, 6, 4, 4), torch.randn(2, 6, 2, 2)]
    full = encoder(features)  # [2, A, 3]
    a = full.shape[1]
    assert a == 8 * 8 * 4 + 4 * 4 * 6 + 2 * 2 * 4
    index = torch.randint(0, a, (2, 9))
    index[0, :3] = torch.tensor([0, 8 * 8 * 4, a - 1])  # the first box of each level's edge, the last
    picked = encoder.at(features, index)
    assert picked.shape == (2, 9, 3)
    torch.testing.assert_close(picked, full.gather(1, index[..., None].expand(-1, -1, 3)))
    picked.sum().backward()  # gradients reach the encoder's weights through the shortcut
    assert all(p.grad is not None for p in encoder.parameters())


def test_conv_norm_relu_folds_the_normalisation_in_evaluation_mode():
    torch.manual_seed(0)
    block = ConvNormReLU(nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(5), nn.ReLU())
    with torch.no_grad():
        block[1].running_mean.uniform_(-1, 1)
        block[1].running_var.uniform_(0.5, 2)
        block[1].weight.uniform_(0.5, 2)
        block[1].bias.uniform_(-1, 1)
    x = torch.randn(4, 3, 9, 9)
    plain = nn.Sequential(*block).eval()
    block.eval()
    torch.testing.assert_close(block(x), plain(x))
    block.train()  # training mode normalises by the batch, as the plain stack does
    torch.testing.assert_close(block(x), plain.train()(x))
    block.eval()
    block[1].train()  # the normalisation alone in training mode (a calibration): it is used, not folded
    block[1].momentum = None
    block[1].reset_running_stats()
    block(x)
    torch.testing.assert_close(block[1].running_mean, block[0](x).mean((0, 2, 3)))


def test_backbone_keeps_its_state_dict_keys_and_accepts_either_memory_format():
    backbone = PyramidBackbone(1, (4, 4, 4), (8, 8), norm=True).eval()
    assert "stem.0.1.running_mean" in backbone.state_dict()  # checkpoints of earlier runs still load
    x = torch.rand(2, 1, 32, 32)
    a = backbone(x)
    b = backbone(x.contiguous(memory_format=torch.channels_last))
    assert list(a) == ["0", "1"] and a["0"].shape == (2, 8, 4, 4)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


@pytest.mark.parametrize("hidden", [0, 5])
def test_shared_anchor_windows_give_the_full_heads_values_and_gradients_on_oblong_maps(hidden):
    """Two encoders sharing one :func:`anchor_windows` (as SSDIR's what and depth encoders do) give the
    full heads' rows at the boxes, and the same gradients, on maps that are not square."""
    from ppl_scenes.nn.ssd import anchor_windows

    torch.manual_seed(1)
    encoders = [AnchorEncoder([4, 4], [3, 2], dim=d, hidden=hidden) for d in (2, 1)]
    features = [torch.randn(3, 4, 6, 9, requires_grad=True), torch.randn(3, 4, 3, 5, requires_grad=True)]
    a = 6 * 9 * 3 + 3 * 5 * 2
    index = torch.randint(0, a, (3, 7))
    windows = anchor_windows(features, index, encoders[0].num_anchors)
    for encoder in encoders:
        full = encoder(features)
        want = full.gather(1, index[..., None].expand(-1, -1, full.shape[-1]))
        got = encoder.at(features, index, windows)
        torch.testing.assert_close(got, want)
        w = torch.randn_like(got)
        params = [*features, *encoder.parameters()]
        for g, r in zip(
            torch.autograd.grad((got * w).sum(), params, retain_graph=True),
            torch.autograd.grad((want * w).sum(), params),
        ):
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hidden", [0, 5])
def test_anchor_encodings_equal_each_encoders_own_rows_and_gradients(hidden):
    """Encoders of one pyramid in one product (:func:`anchor_encodings`) give each encoder's
    :meth:`AnchorEncoder.at`, values and gradients; with a hidden layer each encoder runs on its own."""
    from ppl_scenes.nn.ssd import anchor_encodings

    torch.manual_seed(2)
    encoders = [
        AnchorEncoder([4, 4, 4], [3, 2, 4], dim=3, hidden=hidden),
        AnchorEncoder([4, 4, 4], [3, 2, 4], 1),
    ]
    features = [torch.randn(2, 4, 5, 7), torch.randn(2, 4, 3, 4), torch.randn(2, 4, 1, 2)]
    index = torch.randint(0, 5 * 7 * 3 + 3 * 4 * 2 + 1 * 2 * 4, (2, 6))
    got = anchor_encodings(encoders, features, index)
    want = [e.at(features, index) for e in encoders]
    params = [p for e in encoders for p in e.parameters()]
    weights = [torch.randn_like(w) for w in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    g_got = torch.autograd.grad(sum((g * v).sum() for g, v in zip(got, weights)), params)
    g_want = torch.autograd.grad(sum((w * v).sum() for w, v in zip(want, weights)), params)
    for g, w in zip(g_got, g_want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
