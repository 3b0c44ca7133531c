"""Box conversions between latent parameterisations and absolute-pixel xyxy boxes.

Pixel convention (used by every op in the package): pixel ``i`` covers the interval ``[i, i + 1)``,
so an ``H x W`` image spans ``[0, W] x [0, H]`` and a box is ``(x1, y1, x2, y2)`` in those units, as
``torchvision.ops`` expects.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou, nms

from ppl_scenes.ops.constants import cached_constant
from ppl_scenes.ops.transformer import glimpse_grid_map

__all__ = [
    "box_convert",
    "box_iou",
    "nms",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
    "grid_cell_origins",
    "spair_where_to_cxcywh",
    "spair_glimpse_grid_map",
    "clip_boxes",
    "tighten_boxes",
    "drawn_boxes",
]


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Convert ``[..., 4]`` boxes (centre x, centre y, width, height) to ``(x1, y1, x2, y2)``.

    One product with a constant matrix of halves, ones and zeros (fewer operations than splitting
    and concatenating columns); the values are exact, each a sum of a halved and an unscaled term.
    """
    return _converted(boxes, True)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """Convert ``[..., 4]`` boxes ``(x1, y1, x2, y2)`` to (centre x, centre y, width, height), as
    :func:`cxcywh_to_xyxy` does the other way."""
    return _converted(boxes, False)


def _converted(boxes: Tensor, to_xyxy: bool) -> Tensor:
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"boxes must be [..., 4], got shape {tuple(boxes.shape)}")
    boxes = boxes if boxes.is_floating_point() else boxes.to(torch.get_default_dtype())
    return boxes @ _conversion(to_xyxy, boxes.dtype, boxes.device)


@cached_constant
def _conversion(to_xyxy: bool, dtype, device) -> Tensor:
    """``[4, 4]``: ``cxcywh @ M = xyxy`` (``to_xyxy``), else ``xyxy @ M = cxcywh``."""
    if to_xyxy:  # x1 = cx - w / 2, y1 = cy - h / 2, x2 = cx + w / 2, y2 = cy + h / 2
        rows = [[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]]
    else:  # cx = (x1 + x2) / 2, cy = (y1 + y2) / 2, w = x2 - x1, h = y2 - y1
        rows = [[0.5, 0, -1, 0], [0, 0.5, 0, -1], [0.5, 0, 1, 0], [0, 0.5, 0, 1]]
    return torch.tensor(rows, dtype=dtype, device=device)


def grid_cell_origins(grid: tuple[int, int], cell: tuple[int, int], device=None, dtype=None) -> Tensor:
    """Top-left pixel ``(x, y)`` of every cell of an ``H x W`` grid, raster order: ``[H * W, 2]``."""
    gh, gw = grid
    ys = torch.arange(gh, device=device, dtype=dtype or torch.float32) * cell[0]
    xs = torch.arange(gw, device=device, dtype=dtype or torch.float32) * cell[1]
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx.reshape(-1), yy.reshape(-1)), dim=-1)


def spair_where_to_cxcywh(
    z_where: Tensor,
    grid: tuple[int, int],
    cell: tuple[int, int],
    anchor: tuple[float, float],
    bounds: tuple[float, float] = (-0.5, 1.5),
    cells: Tensor | None = None,
) -> Tensor:
    """SPAIR's box parameterisation (Crawford & Pineau 2019, eqs. 2-6) to pixel (cx, cy, w, h).

    ``z_where[..., c, :] = (z_y, z_x, z_h, z_w)`` for cell ``c`` in raster order of the ``grid``
    (or for the cells listed in ``cells``, when only some are given).
    The centre offset within the cell is ``sigmoid(z) * (b_max - b_min) + b_min`` in cell units, so
    a centre may leave its cell by half a cell on the top/left and one cell on the bottom/right;
    sizes are ``sigmoid(z_h) * a_h`` and ``sigmoid(z_w) * a_w`` for the anchor ``(a_h, a_w)``.
    Computed as one affine map of ``sigmoid(z)`` with per-cell offsets built once per grid.
    """
    offset, scale, swap = _where_affine(
        tuple(grid), tuple(cell), tuple(anchor), tuple(bounds), z_where.device, z_where.dtype
    )
    if cells is not None:
        offset = offset[cells]
    return offset + torch.sigmoid(z_where).index_select(-1, swap) * scale


@cached_constant
def _where_affine(grid, cell, anchor, bounds, device, dtype) -> tuple[Tensor, Tensor, Tensor]:
    """``(offset [N, 4], scale [4], swap [4])``: ``box = offset + sigmoid(z)[swap] * scale`` (eqs. 2-6)."""
    b_min, b_max = bounds
    origins = grid_cell_origins(grid, cell, device=device, dtype=dtype)
    shift = torch.tensor([b_min * cell[1], b_min * cell[0]], device=device, dtype=dtype)
    offset = torch.cat((origins + shift, origins.new_zeros(len(origins), 2)), -1)
    span = b_max - b_min
    scale = torch.tensor([span * cell[1], span * cell[0], anchor[1], anchor[0]], device=device, dtype=dtype)
    return offset, scale, torch.tensor([1, 0, 3, 2], device=device)


@cached_constant
def spair_glimpse_grid_map(
    grid, cell, anchor, bounds, out_size, image_size, columns: int, device, dtype
) -> tuple[Tensor, Tensor]:
    """``(weights [columns, K], bias [N, K])``: the flat sampling grids (``K = h * w * 2``) of SPAIR's
    glimpses of ``out_size`` in an image of ``image_size`` ``(H, W)`` as one affine map of the latent,
    ``grids = sigmoid(z_where) @ weights + bias[cells]``.

    Composes :func:`spair_where_to_cxcywh` (affine in ``sigmoid(z_where)``, eqs. 2-6) with the box's
    sampling grid (:func:`~ppl_scenes.ops.transformer.glimpse_grid_map`, affine in the box). Rows of
    ``weights`` past the first four are zero: a latent with further columns (``z_depth``) may be passed
    whole.
    """
    offset, scale, swap = _where_affine(grid, cell, anchor, bounds, device, dtype)
    to_box = torch.zeros(columns, 4, device=device, dtype=dtype)
    to_box[swap, torch.arange(4, device=device)] = scale  # box_k = sigmoid(z)[swap_k] * scale_k
    grid_weights, grid_bias = glimpse_grid_map(*out_size, image_size[1], image_size[0], device, dtype)
    return to_box @ grid_weights, offset @ grid_weights + grid_bias


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip xyxy boxes to an image of ``size = (H, W)``."""
    h, w = size
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1.clamp(0, w), y1.clamp(0, h), x2.clamp(0, w), y2.clamp(0, h)), dim=-1)


def tighten_boxes(boxes: Tensor, alpha: Tensor, threshold: float = 0.1) -> Tensor:
    """Shrink xyxy boxes to the part of their glimpse that is actually drawn (GMAIR, Appendix B.3).

    A model may find an object but enclose it in a box with empty margins; the rows and columns of
    the decoded opacity glimpse whose largest value exceeds ``threshold`` give the object's real
    extent inside the box. A glimpse with nothing above the threshold keeps its box.

    Args:
        boxes: ``[..., 4]`` xyxy boxes, each the area its glimpse is pasted into.
        alpha: ``[..., h, w]`` (or ``[..., 1, h, w]``) opacity glimpses in [0, 1], one per box.
        threshold: opacity above which a glimpse pixel counts as drawn.

    Returns:
        ``[..., 4]`` boxes inside the given ones.
    """
    if alpha.dim() == boxes.dim() + 2:
        alpha = alpha.squeeze(-3)
    gh, gw = alpha.shape[-2:]
    (c0, c1), (r0, r1) = _drawn_extent(alpha > threshold, boxes.dtype)
    x1, y1, x2, y2 = boxes.unbind(-1)
    bw, bh = (x2 - x1) / gw, (y2 - y1) / gh
    return torch.stack((x1 + c0 * bw, y1 + r0 * bh, x1 + (c1 + 1) * bw, y1 + (r1 + 1) * bh), dim=-1)


def _drawn_extent(drawn: Tensor, dtype) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """First and last drawn column and row of boolean maps ``[..., h, w]``: ``((c0, c1), (r0, r1))``.

    A map with nothing drawn gets its full extent.
    """
    rows, cols = drawn.any(-1), drawn.any(-2)  # [..., h], [..., w]

    def extent(mask: Tensor) -> tuple[Tensor, Tensor]:
        size = mask.shape[-1]
        first = mask.float().argmax(-1)
        last = size - 1 - mask.flip(-1).float().argmax(-1)
        empty = ~mask.any(-1)
        return torch.where(empty, 0, first).to(dtype), torch.where(empty, size - 1, last).to(dtype)

    return extent(cols), extent(rows)


def drawn_boxes(visible: Tensor, origins: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Pixel boxes of what is drawn in image-aligned windows, by the rule of the truth boxes.

    The scene generators box each object around its ink: the pixels whose intensity exceeds a
    threshold, ends exclusive. Applied to a model's rendering of one object (each object drawn alone
    on a window of the canvas), the same rule gives a box defined exactly as the truth is.

    Args:
        visible: ``[..., h, w]`` how strongly each window pixel shows the object (e.g. its opacity
            times its contrast with the background), one window per object.
        origins: ``[..., 2]`` image position ``(x, y)`` of each window's top-left pixel (broadcast
            against ``visible``'s leading dims).
        threshold: value above which a pixel counts as drawn.

    Returns:
        ``[..., 4]`` xyxy boxes and ``[...]`` whether anything was drawn at all (a window with nothing
        above the threshold gets its full extent and ``False``).
    """
    try:
        if origins.shape[-1] != 2:
            raise RuntimeError
        torch.broadcast_shapes(visible.shape[:-2], origins.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"origins [..., 2] must broadcast against the leading dims of visible [..., h, w], got "
            f"{tuple(origins.shape)} and {tuple(visible.shape)}"
        ) from None
    drawn = visible > threshold
    (c0, c1), (r0, r1) = _drawn_extent(drawn, origins.dtype)
    x0, y0 = origins.unbind(-1)
    boxes = torch.stack((x0 + c0, y0 + r0, x0 + c1 + 1, y0 + r1 + 1), dim=-1)
    return boxes, drawn.flatten(-2).any(-1)


def covered_fraction(boxes: Tensor, windows: Tensor) -> Tensor:
    """``[N, M]`` fraction of each xyxy box's area that lies inside each xyxy window.

    Args:
        boxes: ``[N, 4]`` boxes (e.g. true objects).
        windows: ``[M, 4]`` windows (e.g. glimpses).
    """
    top_left = torch.maximum(boxes[:, None, :2], windows[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], windows[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1)
    return inter / area.clamp(min=1e-12)[:, None]
