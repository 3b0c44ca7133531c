"""MIST's scale-space heatmap pipeline: local softmax, scale pooling, top-K extraction and its inverse.

Angles et al., "MIST: Multiple Instance Spatial Transformer" (CVPR 2021), §3.1 and §4. A heatmap
network scores every pixel at ``S`` discrete scales, giving ``h = {h_s}`` of shape ``[B, S, H, W]``.

* :func:`local_spatial_softmax` sharpens each scale map with a softmax over a square window
  (15 x 15 in the paper): ``h~_s(p) = exp(h_s(p)) / sum_{q in window(p)} exp(h_s(q))``.
* :func:`scale_pool` relates the scales without a second exponential (the maps are already
  "exponentiated"): ``h'_s = h~_s * h~_s / sum_s' (h~_s' + eps)`` and ``h' = sum_s h'_s``.
* :func:`extract_top_k` is the paper's ``E_K``: non-maximum suppression on ``h'``
  (:func:`local_maxima`), the ``K`` strongest maxima, and each one's scale as the first moment of
  ``h'_s`` over the scale values at that pixel. It is not differentiable in the positions.
* :func:`target_heatmap` is ``E_K^{-1}``, the target for the lifted training stage (§4): zero except
  one unit of mass at each (rounded) position, split between the two scale values that bracket the
  requested scale so that its centre of mass is that scale. ``E_K(E_K^{-1}(x, s))`` gives back the
  positions and scales when the positions are further apart than the NMS window.

Pixel convention (as in :mod:`ppl_scenes.ops.boxes`): pixel ``i`` covers ``[i, i + 1)``, so positions
are continuous ``(x, y)`` coordinates, a peak found at pixel ``(i, j)`` (row ``j``) is reported at its
centre ``(i + 0.5, j + 0.5)``, and "rounding to the nearest pixel" means taking the pixel whose centre
is nearest, ties to the even index (:func:`nearest_pixel`). Scales are whatever values the caller
attaches to the ``S`` maps (e.g. patch sizes in pixels); they must be strictly increasing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-6


def _check_heatmap(h: Tensor, name: str = "heatmap") -> None:
    if h.dim() != 4:
        raise ValueError(f"{name} must be [B, S, H, W], got shape {tuple(h.shape)}")
    if not h.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {h.dtype}")


def _check_window(window: int, name: str) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0 or window % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer, got {window!r}")


def _scale_tensor(scale_values: Sequence[float] | Tensor, like: Tensor) -> Tensor:
    """Validated 1-D tensor of strictly increasing scale values on ``like``'s device and dtype (a
    Python sequence is checked on the host, so a training step reads nothing back for it)."""
    values = torch.as_tensor(scale_values, dtype=like.dtype, device=like.device)
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"scale_values must be a non-empty 1-D sequence, got shape {tuple(values.shape)}")
    if isinstance(scale_values, Tensor):
        bad = bool(~torch.isfinite(values).all() | (values[1:] <= values[:-1]).any())
    else:
        listed = [float(v) for v in scale_values]
        bad = not all(map(math.isfinite, listed)) or any(b <= a for a, b in zip(listed, listed[1:]))
    if bad:
        raise ValueError(f"scale_values must be finite and strictly increasing, got {values.tolist()}")
    return values


BORDERS = ("clip", "replicate")


def _window_logsumexp(x: Tensor, window: int, border: str) -> Tensor:
    """``logsumexp`` of ``x`` over a centred ``window`` along the last dim (see :data:`BORDERS`)."""
    r = window // 2
    if border == "clip":  # -inf logits: outside pixels weigh exp(-inf) = 0
        padded = F.pad(x, (r, r), value=float("-inf"))
    else:
        padded = F.pad(x, (r, r, 0, 0), mode="replicate")  # last dim only ([B, S, *, *] input)
    return padded.unfold(-1, window, 1).logsumexp(-1)


def local_spatial_softmax(heatmap: Tensor, window: int = 15, border: str = "clip") -> Tensor:
    """Softmax of every scale map over the ``window x window`` neighbourhood of each pixel.

    ``out[b, s, y, x] = exp(h[b, s, y, x]) / sum_{q in window(y, x)} exp(h[b, s, q])`` (MIST §3.1,
    from LF-Net). The sum is computed in the log domain as two separable 1-D ``logsumexp`` passes,
    which is exact and numerically stable for logits of any magnitude, and is differentiable. Every
    output lies in ``(0, 1]``.

    Border conventions (the paper names none):

    * ``"clip"``: the window is clipped to the image, only pixels inside it enter the sum (the
      logits are padded with ``-inf``), so a constant map gives ``1 / (number of in-image pixels in
      the window)`` -- *larger at the border*, largest in the corners.
    * ``"replicate"``: the window extends beyond the image with the border pixels' values repeated,
      so every window sums ``window ** 2`` terms and a constant map gives ``1 / window ** 2``
      everywhere. Peaks then come from the image's content, not from its border (what MIST uses: with
      ``"clip"`` an untrained heatmap puts every top-K patch on the border, away from the objects).

    Args:
        heatmap: ``[B, S, H, W]`` logits.
        window: odd side of the square window (15 in the paper).
        border: ``"clip"`` or ``"replicate"``.

    Returns:
        ``[B, S, H, W]`` sharpened maps.
    """
    _check_heatmap(heatmap)
    _check_window(window, "window")
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    rows = _window_logsumexp(heatmap, window, border)  # over x
    log_norm = _window_logsumexp(rows.transpose(-1, -2), window, border).transpose(-1, -2)  # then over y
    return torch.exp(heatmap - log_norm)


def scale_pool(heatmap: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """MIST's "softmax pooling" over scales, without an exponential.

    ``h'_s = h~_s * (h~_s / sum_s' (h~_s' + eps))`` and ``h' = sum_s h'_s`` (MIST §3.1), where ``h~``
    is the output of :func:`local_spatial_softmax`. Differentiable.

    Args:
        heatmap: ``[B, S, H, W]`` non-negative maps ``h~``.
        eps: added to every term of the denominator (``1e-6`` in the paper).

    Returns:
        ``(per_scale, pooled)``: the weighted maps ``h'_s`` as ``[B, S, H, W]`` and their sum over
        scales ``h'`` as ``[B, H, W]``.
    """
    _check_heatmap(heatmap)
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    denom = (heatmap + eps).sum(dim=1, keepdim=True)
    per_scale = heatmap * (heatmap / denom)
    return per_scale, per_scale.sum(dim=1)


def _shifted_max(x: Tensor, pad: tuple[int, int, int, int], kernel: tuple[int, int]) -> Tensor:
    """Max-pool of ``[N, 1, H, W]`` ``x`` over an offset rectangle; ``pad`` is (left, right, top, bottom)."""
    padded = F.pad(x, pad, value=float("-inf"))
    return F.max_pool2d(padded, kernel, stride=1)[..., : x.shape[-2], : x.shape[-1]]


def local_maxima(pooled: Tensor, window: int = 3) -> Tensor:
    """Non-maximum suppression: which pixels are the maximum of their ``window x window`` neighbourhood.

    A pixel is kept when its value equals the maximum over the centred window (clipped to the image)
    and no pixel before it in raster order inside that window has the same value, so a plateau yields
    a single maximum (its first pixel in raster order) and every kept pixel is strictly greater than
    the earlier pixels of its window.

    Args:
        pooled: ``[B, H, W]`` scores (e.g. the pooled ``h'`` of :func:`scale_pool`).
        window: odd side of the NMS window; 1 keeps every pixel.

    Returns:
        ``[B, H, W]`` boolean mask of the kept maxima.
    """
    if pooled.dim() != 3:
        raise ValueError(f"pooled must be [B, H, W], got shape {tuple(pooled.shape)}")
    _check_window(window, "nms_window")
    r = window // 2
    x = pooled.detach()[:, None]
    is_max = x >= F.max_pool2d(x, window, stride=1, padding=r)
    if r > 0:
        above = _shifted_max(x, (r, r, r, 0), (r, window))  # rows y - r .. y - 1, columns x - r .. x + r
        left = _shifted_max(x, (r, 0, 0, 0), (1, r))  # row y, columns x - r .. x - 1
        is_max = is_max & (x > torch.maximum(above, left))
    return is_max[:, 0]


def extract_top_k(
    heatmap: Tensor, scale_values: Sequence[float] | Tensor, k: int, nms_window: int = 3
) -> tuple[Tensor, Tensor]:
    """The paper's top-K extractor ``E_K``: the ``K`` strongest local maxima and their scales.

    The per-scale maps are summed over scales, :func:`local_maxima` suppresses non-maxima, and the
    ``K`` maxima with the highest pooled score are taken (ties in raster order; if an image has fewer
    than ``K`` maxima the remaining slots take its highest-scoring other pixels). Each one's scale is
    the *normalised* first moment of the per-scale responses at its pixel,
    ``s_k = sum_s h'_s(x_k, y_k) * s / sum_s h'_s(x_k, y_k)`` -- the paper writes the numerator only,
    which equals this when the responses sum to one -- and is the mean scale value where all the
    responses are zero. Differentiable in the scales (through the responses), not in the positions.

    Args:
        heatmap: ``[B, S, H, W]`` non-negative per-scale maps ``h'_s`` (from :func:`scale_pool`, or a
            target from :func:`target_heatmap`).
        scale_values: the ``S`` strictly increasing scale values attached to the maps.
        k: number of maxima per image, ``1 <= k <= H * W``.
        nms_window: odd side of the non-maximum-suppression window.

    Returns:
        ``(positions, scales)``: ``[B, K, 2]`` pixel centres ``(x, y)`` (``column + 0.5``, ``row + 0.5``)
        and ``[B, K]`` scales, in decreasing order of score.
    """
    _check_heatmap(heatmap)
    b, s, h, w = heatmap.shape
    values = _scale_tensor(scale_values, heatmap)
    if values.numel() != s:
        raise ValueError(f"got {values.numel()} scale values for a heatmap with {s} scales")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= h * w:
        raise ValueError(f"k must be an integer in [1, H * W = {h * w}], got {k!r}")
    _check_window(nms_window, "nms_window")

    pooled = heatmap.sum(dim=1)
    keep = local_maxima(pooled, nms_window).flatten(1)
    # Order by (is a maximum, score), both descending; stable sorts break ties in raster order.
    by_score = pooled.detach().flatten(1).argsort(dim=1, descending=True, stable=True)
    maxima_first = keep.gather(1, by_score).to(torch.uint8).argsort(dim=1, descending=True, stable=True)
    index = by_score.gather(1, maxima_first)[:, :k]  # [B, K] flat pixel indices

    responses = heatmap.flatten(2).gather(2, index[:, None].expand(b, s, k))  # [B, S, K]
    mass = responses.sum(dim=1)
    moment = (responses * values[:, None]).sum(dim=1)
    scales = torch.where(mass > 0, moment / torch.where(mass > 0, mass, 1.0), values.mean())
    positions = torch.stack((index % w, torch.div(index, w, rounding_mode="floor")), dim=-1)
    return positions.to(heatmap.dtype) + 0.5, scales


def nearest_pixel(coords: Tensor) -> Tensor:
    """Index of the pixel whose centre (``index + 0.5``) is nearest to each continuous coordinate.

    A coordinate on the edge between two pixels is as near to both; it goes to the even index
    (``torch.round``), so a move of half a pixel from a pixel's centre rounds alike to the right and
    to the left: from centre ``i + 0.5``, ``+0.5`` and ``-0.5`` both stay on ``i`` or go to ``i + 1``
    and ``i - 1``. Taking the pixel that *contains* the coordinate (``floor``) is biased exactly
    there: ``+0.5`` moves a whole pixel and ``-0.5`` does not move at all. MIST's refinement makes
    such moves all the time (Adam's first step is ``refine_lr`` = 0.5 px times the gradient's sign),
    and with ``floor`` its targets moved patches right and down more often than left and up.

    Args:
        coords: continuous coordinates (pixel ``i`` covers ``[i, i + 1)``).

    Returns:
        ``long`` pixel indices, not clamped to the image.
    """
    return torch.round(coords - 0.5).long()


def target_heatmap(
    positions: Tensor,
    scales: Tensor,
    scale_values: Sequence[float] | Tensor,
    size: tuple[int, int],
    mask: Tensor | None = None,
) -> Tensor:
    """The inverse extractor ``E_K^{-1}``: the target heatmap for the lifted training stage (MIST §4).

    Zero everywhere except one unit of mass per object at the pixel whose centre is nearest to its
    position (:func:`nearest_pixel`; positions outside the image are clamped to the border pixel). Across
    scales the mass is split linearly between the two scale values that bracket the object's scale,
    so the centre of mass ``sum_s w_s * s`` equals it; scales outside the range of ``scale_values``
    are clamped to it, and a single scale value takes all the mass. Objects that fall on the same
    pixel add up. Differentiable in ``scales``.

    Args:
        positions: ``[B, K, 2]`` continuous ``(x, y)`` positions (pixel ``i`` covers ``[i, i + 1)``).
        scales: ``[B, K]`` scales, in the units of ``scale_values``.
        scale_values: the ``S`` strictly increasing scale values of the heatmap's maps.
        size: ``(H, W)`` of the heatmap.
        mask: ``[B, K]`` objects that enter the target (default all); the others get no mass, so
            the target is ``E_K^{-1}`` of each image's own number of objects.

    Returns:
        ``[B, S, H, W]`` target heatmap, in the dtype of ``positions``.
    """
    if positions.dim() != 3 or positions.shape[-1] != 2:
        raise ValueError(f"positions must be [B, K, 2], got shape {tuple(positions.shape)}")
    if not positions.is_floating_point():
        raise ValueError(f"positions must be a floating-point tensor, got {positions.dtype}")
    b, k, _ = positions.shape
    if scales.shape != (b, k):
        raise ValueError(f"scales must be [B, K] = {(b, k)}, got shape {tuple(scales.shape)}")
    if len(size) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in size):
        raise ValueError(f"size must be two positive integers (H, W), got {size!r}")
    h, w = size
    values = _scale_tensor(scale_values, positions)
    n = values.numel()

    cols = nearest_pixel(positions[..., 0].detach()).clamp(0, w - 1)
    rows = nearest_pixel(positions[..., 1].detach()).clamp(0, h - 1)
    scales = scales.to(positions.dtype).clamp(values[0], values[-1])
    if n == 1:
        lower = torch.zeros_like(cols)
        upper_weight = torch.zeros_like(scales)
    else:
        lower = (torch.searchsorted(values, scales.detach().contiguous(), right=True) - 1).clamp(0, n - 2)
        upper_weight = (scales - values[lower]) / (values[lower + 1] - values[lower])

    pixel = rows * w + cols  # [B, K]
    batch = torch.arange(b, device=positions.device)[:, None] * n
    index = torch.cat((((batch + lower) * h * w + pixel), ((batch + lower + 1) * h * w + pixel)), dim=1)
    mass = torch.cat((1 - upper_weight, upper_weight), dim=1)
    if mask is not None:
        if mask.shape != (b, k):
            raise ValueError(f"mask must be [B, K] = {(b, k)}, got shape {tuple(mask.shape)}")
        mass = mass * mask.to(mass.dtype).repeat(1, 2)
    if n == 1:  # no upper neighbour: keep only the (unit) lower halves
        index, mass = index[:, :k], mass[:, :k]
    out = positions.new_zeros(b * n * h * w)
    out = out.index_add(0, index.flatten(), mass.flatten())
    return out.view(b, n, h, w)


def soft_argmax(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Differentiable expected position of each map under its softmax over all pixels.

    The channel-wise localiser of MIST's baseline (from Zhang et al. 2018): channel ``k`` is turned
    into a distribution ``p_k = softmax(logits_k)`` over the ``H x W`` pixels and its position is
    ``sum_p p_k(p) * centre(p)``, with pixel centres at ``(column + 0.5, row + 0.5)`` as in
    :func:`extract_top_k`.

    Args:
        logits: ``[B, K, H, W]`` scores.

    Returns:
        ``(positions, peaks)``: ``[B, K, 2]`` expected ``(x, y)`` and ``[B, K]`` the largest
        probability of each map (how peaked it is).
    """
    _check_heatmap(logits, "logits")
    b, k, h, w = logits.shape
    probs = logits.flatten(2).softmax(-1).view(b, k, h, w)
    xs = torch.arange(w, dtype=logits.dtype, device=logits.device) + 0.5
    ys = torch.arange(h, dtype=logits.dtype, device=logits.device) + 0.5
    x = (probs.sum(2) * xs).sum(-1)
    y = (probs.sum(3) * ys).sum(-1)
    return torch.stack((x, y), dim=-1), probs.flatten(2).amax(-1)


def count_mask(counts: Tensor | None, num_patches: int, batch: int, device=None) -> Tensor:
    """``[B, K]`` mask of the first ``counts[b]`` patches of each image (all ``K`` when None)."""
    if counts is None:
        return torch.ones(batch, num_patches, dtype=torch.bool, device=device)
    counts = torch.as_tensor(counts, device=device).reshape(-1)
    if counts.numel() != batch:
        raise ValueError(f"counts must give one count per image ({batch}), got {counts.numel()}")
    if (counts < 0).any():
        raise ValueError(f"counts must be non-negative, got {counts.tolist()}")
    return torch.arange(num_patches, device=device) < counts[:, None]
