import pytest
import torch
import torch.nn.functional as F

from ppl_scenes.nn import (
    MultiscaleHeatmapNet,
    PatchAutoEncoder,
    PatchClassifier,
    PatchDecoder,
    PatchEncoder,
    ResidualBlock,
)

TINY = dict(patch_size=16, levels=2, blocks_per_level=1, width=8)


def _squares(n: int = 4, size: int = 16, channels: int = 1) -> torch.Tensor:
    """A fixed batch of patches: one bright square each, at different places and sizes."""
    x = torch.zeros(n, channels, size, size)
    for i in range(n):
        a, w = 1 + 2 * i, 4 + i
        x[i, :, a : a + w, size - a - w : size - a] = 1.0
    return x


@pytest.mark.parametrize(
    "scales, size",
    [((1.0,), (16, 16)), ((1.0, 0.5), (16, 16)), ((1.0, 0.5, 0.25), (32, 32)), ((0.5, 0.3), (15, 17))],
)
def test_heatmap_shape_for_scale_lists_and_sizes(scales, size):
    net = MultiscaleHeatmapNet(in_channels=3, scales=scales, channels=8, num_blocks=1)
    h = net(torch.rand(2, 3, *size))
    assert h.shape == (2, len(scales), *size)
    assert torch.isfinite(h).all()


def test_scaled_size_rounds_to_nearest_and_never_vanishes():
    net = MultiscaleHeatmapNet(scales=(1.0, 0.5), channels=4, num_blocks=0)
    assert net.scaled_size(16, 16, 0.5) == (8, 8)
    assert net.scaled_size(15, 17, 0.5) == (8, 9)  # 7.5 -> 8, 8.5 -> 9: halves round up
    assert net.scaled_size(15, 17, 0.3) == (5, 5)  # 4.5 -> 5, 5.1 -> 5
    assert net.scaled_size(3, 3, 0.1) == (1, 1)


def test_heatmap_weights_are_one_set_shared_across_scales():
    one = MultiscaleHeatmapNet(scales=(1.0,), channels=8, num_blocks=2)
    three = MultiscaleHeatmapNet(scales=(1.0, 0.5, 0.25), channels=8, num_blocks=2)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(one) == count(three)
    # 4 blocks of two 3x3 convs at 32 channels, plus the input and output convs (the paper's net)
    paper = MultiscaleHeatmapNet()
    assert count(paper) == (9 + 1) * 32 + 4 * 2 * (9 * 32 + 1) * 32 + 9 * 32 + 1

    three.load_state_dict(one.state_dict())
    images = torch.rand(2, 1, 15, 17)
    h = three(images)
    torch.testing.assert_close(h[:, :1], one.base(images))  # scale 1 is the base network, unresized
    # scale 0.5 is the same base network on the resized image, resized back
    small = F.interpolate(images, size=(8, 9), mode="bilinear", align_corners=False, antialias=True)
    expected = F.interpolate(three.base(small), size=(15, 17), mode="bilinear", align_corners=False)
    torch.testing.assert_close(h[:, 1:2], expected)
    assert not torch.allclose(h[:, 0], h[:, 1])


def test_every_scale_trains_the_same_parameters():
    net = MultiscaleHeatmapNet(scales=(1.0, 0.5), channels=4, num_blocks=1)
    images = torch.rand(2, 1, 16, 16)
    for s in range(2):
        net.zero_grad()
        net(images)[:, s].sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_heatmap_rejects_bad_arguments_and_inputs():
    for kwargs in [
        dict(scales=()),
        dict(scales=(1.0, 0.0)),
        dict(scales=(2.0,)),
        dict(scales=(0.5, 0.5)),
        dict(channels=0),
        dict(num_blocks=-1),
        dict(in_channels=0),
    ]:
        with pytest.raises(ValueError):
            MultiscaleHeatmapNet(**kwargs)
    net = MultiscaleHeatmapNet(in_channels=1, channels=4, num_blocks=1)
    with pytest.raises(ValueError, match="B, 1, H, W"):
        net(torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="B, 1, H, W"):
        net(torch.rand(2, 3, 16, 16))


def test_residual_block_shapes_and_identity_shortcut():
    x = torch.randn(2, 4, 5, 7)
    assert ResidualBlock(4, 6)(x).shape == (2, 6, 5, 7)
    block = ResidualBlock(4, norm=False)
    torch.nn.init.zeros_(block.branch[-1].weight)
    torch.nn.init.zeros_(block.branch[-1].bias)
    torch.testing.assert_close(block(x), F.relu(x))  # v1: relu(x + branch(x))


@pytest.mark.parametrize("channels", [1, 3])
def test_auto_encoder_output_in_unit_interval_with_input_shape(channels):
    ae = PatchAutoEncoder(in_channels=channels, **TINY)
    x = torch.rand(2, channels, 16, 16)
    out = ae(x)
    assert out.shape == x.shape and (out >= 0).all() and (out <= 1).all()
    # the code is the encoder's feature map: 2 levels of 16 halve twice, 8 -> 16 channels
    assert ae.encoder(x).shape == (2, 16, 4, 4) and ae.encoder.latent_dim == 16 * 4 * 4
    # leading dimensions [B, K] pass through
    assert ae(torch.rand(2, 3, channels, 16, 16)).shape == (2, 3, channels, 16, 16)


def test_paper_sized_encoder_gives_a_one_pixel_code():
    enc = PatchEncoder(in_channels=1, patch_size=32, levels=5, blocks_per_level=1, width=4)
    assert enc(torch.rand(2, 1, 32, 32)).shape == (2, 64, 1, 1)
    dec = PatchDecoder(in_channels=1, patch_size=32, levels=5, blocks_per_level=1, width=4)
    assert dec(torch.randn(2, 64, 1, 1)).shape == (2, 1, 32, 32)


def test_classifier_logits_shape_and_shared_encoder_class():
    clf = PatchClassifier(in_channels=1, num_classes=7, **TINY)
    assert type(clf.encoder) is type(PatchAutoEncoder(**TINY).encoder) is PatchEncoder
    assert clf(torch.rand(2, 1, 16, 16)).shape == (2, 7)
    assert clf(torch.rand(2, 3, 1, 16, 16)).shape == (2, 3, 7)


def test_auto_encoder_learns_a_fixed_batch():
    torch.manual_seed(0)
    ae = PatchAutoEncoder(in_channels=1, **TINY)
    x = _squares()
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = F.mse_loss(ae(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = F.mse_loss(ae(x), x).item()
    assert final < 0.1 * losses[0], (losses[0], final)


def test_classifier_learns_a_fixed_batch():
    torch.manual_seed(0)
    clf = PatchClassifier(in_channels=1, num_classes=4, **TINY)
    x, y = _squares(), torch.arange(4)
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    for _ in range(30):
        loss = F.cross_entropy(clf(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (clf(x).argmax(-1) == y).all()


def test_task_networks_reject_bad_arguments_and_inputs():
    for kwargs in [
        dict(patch_size=20, levels=3),  # 20 is not divisible by 8
        dict(levels=0),
        dict(width=0),
        dict(blocks_per_level=0),
        dict(in_channels=0),
    ]:
        for cls in (PatchEncoder, PatchDecoder, PatchAutoEncoder, PatchClassifier):
            with pytest.raises(ValueError):
                cls(**kwargs)
    with pytest.raises(ValueError, match="num_classes"):
        PatchClassifier(num_classes=0)
    ae = PatchAutoEncoder(in_channels=1, **TINY)
    for bad in [torch.rand(1, 16, 16), torch.rand(2, 3, 16, 16), torch.rand(2, 1, 16, 12)]:
        with pytest.raises(ValueError, match="patches must be"):
            ae(bad)
    with pytest.raises(ValueError, match="features must be"):
        ae.decoder(torch.rand(2, 8, 4, 4))
