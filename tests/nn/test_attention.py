"""ProxyAttention: the prior maps, the soft-argmax point, the brightness and the inhibition of return."""

import torch

from ppl_scenes.nn.attention import ProxyAttention, initial_attention_maps, spread_grid


def test_spread_grid_and_prior_maps():
    torch.testing.assert_close(
        spread_grid(4), torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    )
    maps = initial_attention_maps(4, 8)
    assert maps.shape == (4, 8, 8)
    # each map peaks on its own cell: step 1 in the top-right quadrant
    peak = divmod(int(maps[1].argmax()), 8)
    assert peak[0] < 4 <= peak[1]
    assert torch.equal(initial_attention_maps(4, 8, spread=False), torch.zeros(4, 8, 8))


def test_a_key_that_matches_the_query_draws_the_point_from_any_start():
    attention = ProxyAttention(1, 4, state_dim=3, num_steps=4, image_size=8)
    keys = torch.zeros(1, 5, 4, 4)  # 4 channels of the map and the brightness
    keys[0, 0, 3, 0] = 50.0  # row 3, column 0 of the 4x4 map: bottom left
    with torch.no_grad():
        attention.query.bias[0] = 1.0
    for t in range(4):
        point = attention(keys, torch.zeros(1, 3), t)[0]
        torch.testing.assert_close(point, torch.tensor([0.125, 0.875]), atol=1e-3, rtol=0)


def test_brightness_and_inhibition_of_return():
    attention = ProxyAttention(1, 4, state_dim=3, num_steps=2, image_size=16, spread=False, saliency=200.0)
    image = torch.zeros(1, 1, 16, 16)
    image[0, 0, 10:14, 2:6] = 1.0  # one bright blob, centre (4, 12) of 16: (0.25, 0.75)
    keys = attention.keys(image)
    assert keys.shape == (1, 5, 8, 8) and keys[0, -1].argmax() == 5 * 8 + 1  # brightness peaks on it
    point = attention(keys, torch.zeros(1, 3), 0)[0]
    torch.testing.assert_close(point, torch.tensor([0.25, 0.75]), atol=0.03, rtol=0)
    # no inhibition yet: looking there again; with it, the point leaves the visited blob
    again = attention(keys, torch.zeros(1, 3), 1, visited=point[None, None])[0]
    torch.testing.assert_close(again, point)
    with torch.no_grad():
        attention.return_penalty.fill_(300.0)
    away = attention(keys, torch.zeros(1, 3), 1, visited=point[None, None])[0]
    assert (away - point).norm() > 0.2
