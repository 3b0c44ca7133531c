import torch

from ppl_scenes.ops import composite


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
