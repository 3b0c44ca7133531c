import pytest
import torch

from ppl_scenes.ops import composite, depth_weighted_layers


def test_single_opaque_object_replaces_background():
    app = torch.zeros(1, 1, 1, 4, 4)
    app[..., 1:3, 1:3] = 0.7
    alpha = (app > 0).float()
    out = composite(app, alpha, torch.zeros(1, 1), background=0.2)
    expected = torch.full((1, 1, 4, 4), 0.2)
    expected[..., 1:3, 1:3] = 0.7
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_deeper_object_dominates_overlap_and_output_is_convex():
    app = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 0.0)])[None]
    alpha = torch.ones(1, 2, 1, 2, 2)
    front = composite(app, alpha, torch.tensor([[5.0, -5.0]]), background=0.5)
    back = composite(app, alpha, torch.tensor([[-5.0, 5.0]]), background=0.5)
    assert front.min() > 0.99 and back.max() < 0.01
    even = composite(app, alpha, torch.zeros(1, 2), background=0.5)
    torch.testing.assert_close(even, torch.full_like(even, 0.5))


def test_zero_alpha_objects_leave_the_background():
    app = torch.rand(2, 3, 3, 5, 5)
    out = composite(
        app,
        torch.zeros(2, 3, 1, 5, 5),
        torch.randn(2, 3),
        background=torch.tensor([0.1, 0.2, 0.3])[:, None, None],
    )
    torch.testing.assert_close(out, torch.tensor([0.1, 0.2, 0.3])[None, :, None, None].expand(2, 3, 5, 5))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("channel_major", [False, True])
def test_depth_weighted_layers_values_and_gradients(channels, channel_major):
    g = torch.Generator().manual_seed(channels)
    shape = (2, 3, channels + 1, 4, 5)
    drawn = torch.rand(shape, generator=g, dtype=torch.double)
    if channel_major:  # the layout paste_patches gives
        drawn = drawn.transpose(1, 2).contiguous().transpose(1, 2)
    drawn.requires_grad_()
    depth = torch.randn(2, 3, generator=g, dtype=torch.double, requires_grad=True)

    def formula(drawn, depth):
        o, a = drawn[:, :, :channels], drawn[:, :, channels:]
        w = a * torch.exp(depth - depth.detach().amax(1, keepdim=True))[:, :, None, None, None]
        return torch.cat((w * a * o, w * a, w), 2)

    got = depth_weighted_layers(drawn, depth)
    torch.testing.assert_close(got, formula(drawn, depth))
    assert got.transpose(1, 2).is_contiguous() == channel_major  # laid out as its input
    with torch.no_grad():
        torch.testing.assert_close(depth_weighted_layers(drawn, depth), got)
    weights = torch.rand(got.shape, generator=g, dtype=torch.double)
    want = torch.autograd.grad((formula(drawn, depth) * weights).sum(), (drawn, depth))
    have = torch.autograd.grad((depth_weighted_layers(drawn, depth) * weights).sum(), (drawn, depth))
    for a, b in zip(have, want):
        torch.testing.assert_close(a, b)
    # depth's numerical Jacobian moves the (detached) shift by the largest depth: the drawn alone
    assert torch.autograd.gradcheck(lambda d: depth_weighted_layers(d, depth.detach()), (drawn,))
