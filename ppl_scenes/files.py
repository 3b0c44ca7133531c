"""Models on your own image files: parse folders to COCO detections, score against COCO truth.

* :func:`parse_files` runs a trained model over every image of some paths (folders recursively, globs,
  files; see :func:`ppl_scenes.data.images.find_images`) and returns COCO-format records; write them
  with :func:`write_coco`, :func:`write_codes` (each object's ``z_what``), :func:`write_csv` and
  :func:`draw_parses`.
* Fully convolutional models (SPAIR, GMAIR) parse each image whole at its own size (the model pads it
  to its cell grid). Models that work at one input size (SSDIR: its ``config.image_size``) or report
  a fixed number of objects per input (MIST: ``num_patches``) parse large images in overlapping tiles
  (:func:`tile_parse`): each tile's detections are kept where the box centre lies in the tile's *core*
  (the tile minus half of each overlap with a neighbour, so every point of the image belongs to one
  core), then class-agnostic non-maximum suppression (IoU ``nms_iou``) removes what duplicates remain.
  Images smaller than SSDIR's input are padded with zeros at the bottom and right.
* :func:`score_coco` scores a model on images with COCO ground truth: AP@0.5 and AP@[0.5:0.95] by the
  COCO rules (pycocotools, class-agnostic: the model's clusters are not the truth's classes), count
  accuracy and count MAE per image. :func:`score_detections` scores records already made.
* :func:`evaluate_unlabelled` is what a user without labels gets on the validation crops: the ELBO per
  image and the distribution of the counts.

Records (what :func:`parse_files` returns): the COCO keys ``images`` (``id`` from 1, ``file_name`` as
the image was named, ``width``, ``height``), ``annotations`` (``id`` from 1, ``image_id``, ``bbox``
``[x, y, w, h]`` in pixels, ``area``, ``score``, ``category_id`` -- 1, or the model's cluster / class
plus 1 -- and ``iscrowd`` 0) and ``categories``; plus ``codes`` (annotation id -> ``z_what`` as a
float32 array), ``skipped`` (files that failed to decode with ``skip_bad``), ``ignored`` (non-image
files met in the folders) and, with ``keep_reconstructions``, ``reconstructions`` (image id -> ``[C,
H, W]``). Only the objects the model reports present are written (its own presence threshold, or
``threshold``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import posixpath
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import nms
from tqdm.auto import tqdm

from ppl_scenes.checks import check_positive_int
from ppl_scenes.data.images import (
    FoundImages,
    ImageEntry,
    ImageInputError,
    UnreadableImageError,
    find_images,
    read_image,
)
from ppl_scenes.metrics import count_accuracy, count_mae
from ppl_scenes.models.base import (
    Categorised,
    ImageLevel,
    PresenceBoxes,
    RankedParse,
    SceneParse,
    TargetedParse,
    TiledParse,
    Variational,
)
from ppl_scenes.viz import plot_scenes

__all__ = [
    "AnnotationError",
    "ImageLevelModelError",
    "OutputPathError",
    "check_output_path",
    "draw_parses",
    "evaluate_unlabelled",
    "load_coco_annotations",
    "parse_files",
    "score_coco",
    "score_detections",
    "tile_parse",
    "write_codes",
    "write_coco",
    "write_csv",
]


class ImageLevelModelError(ValueError):
    """The model predicts per image (variational saccading, the ResNet baseline): it reports no objects."""


class OutputPathError(ValueError):
    """An output path whose folder does not exist."""


class AnnotationError(ValueError):
    """Ground truth that is not COCO, or that names files not given."""


# -- what the model contract says about parsing files ----------------------------------------------
def _fixed_input_size(model) -> tuple[int, int] | None:
    """The ``(H, W)`` every input of ``parse`` must have (a fixed-input :class:`TiledParse`), or None."""
    return tuple(model.parse_tile) if isinstance(model, TiledParse) and model.fixed_input else None


def _presence_threshold(model) -> float | None:
    """The score from which a :class:`RankedParse` reports an object; None for other models."""
    return float(model.presence_threshold) if isinstance(model, RankedParse) else None


def _accepts_threshold(model) -> bool:
    return isinstance(model, RankedParse)


def _check_parsable(model) -> None:
    name = model.name
    if isinstance(model, ImageLevel):
        raise ImageLevelModelError(
            f"{name!r} is an image-level model (it predicts per image): it has no objects to parse or score"
        )
    if isinstance(model, TargetedParse) and model.requires_targets:
        raise ValueError(f"this {name} parses only with the number of objects per image (count_from_labels)")


def _categories(model) -> list[dict[str, Any]]:
    """COCO categories: one ``object``, or one per cluster (GMAIR) / class (SSDIR's detector, MIST)."""
    count = model.num_categories if isinstance(model, Categorised) else 1
    if count > 1:
        name = "cluster" if isinstance(model, PresenceBoxes) else "class"
        return [{"id": k + 1, "name": f"{name} {k}"} for k in range(count)]
    return [{"id": 1, "name": "object"}]


def _default_tile(model) -> tuple[int, int] | None:
    """Tile side of a :class:`TiledParse` model (its fixed size, or a few MIST patch sides); None for a
    fully convolutional one."""
    return tuple(model.parse_tile) if isinstance(model, TiledParse) else None


# -- checks -------------------------------------------------------------------------------------------


def _pair(value: object, name: str) -> tuple[int, int]:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return check_positive_int(value[0], name), check_positive_int(value[1], name)
    side = check_positive_int(value, name)
    return side, side


def _tile_size(model, tile: object) -> tuple[int, int] | None:
    fixed = _fixed_input_size(model)
    if tile is None:
        return _default_tile(model)
    size = _pair(tile, "tile")
    if fixed is not None and size != fixed:
        raise ValueError(
            f"this model parses {fixed[0]}x{fixed[1]} inputs only (config.image_size); tile={tile!r}"
        )
    return size


def _check_threshold(threshold: object) -> float | None:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")
    return float(threshold)


def check_output_path(path: str | os.PathLike, what: str = "output") -> Path:
    """``path`` as a Path, or :class:`OutputPathError` when its folder is missing (call before parsing)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"{what} {str(p)!r}: folder {str(parent)!r} does not exist")
    if p.is_dir():
        raise OutputPathError(f"{what} {str(p)!r} is a folder, not a file")
    return p


def _figures_folder(figures_dir: str | os.PathLike) -> Path:
    d = Path(figures_dir)
    if d.exists() and not d.is_dir():
        raise OutputPathError(f"figures folder {str(d)!r} is a file")
    parent = d.parent if str(d.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"figures folder {str(d)!r}: folder {str(parent)!r} does not exist")
    return d


# -- parsing --------------------------------------------------------------------------------------------


def _parse_batch(
    model, x: Tensor, threshold: float | None
) -> tuple[list[dict[str, Tensor | None]], Tensor | None]:
    """Per image ``{boxes, scores, what, labels}`` (on the CPU) and the reconstruction ``[B, C, H, W]``."""
    kwargs = {}
    if threshold is not None and _accepts_threshold(model):
        kwargs["score_threshold"] = threshold
    with torch.no_grad():
        parse = model.parse(x, **kwargs)
    out = []
    for i in range(len(x)):
        boxes = parse.boxes[i].detach().cpu().float().reshape(-1, 4)
        scores = parse.scores[i].detach().cpu().float().reshape(-1)
        what = None if parse.what is None else _rows(parse.what[i].detach().cpu().float(), len(boxes))
        labels = None if parse.labels is None else parse.labels[i].detach().cpu().long().reshape(-1)
        if threshold is not None and not kwargs:  # the model has no threshold argument: filter here
            keep = scores >= threshold
            boxes, scores = boxes[keep], scores[keep]
            what = None if what is None else what[keep]
            labels = None if labels is None else labels[keep]
        out.append({"boxes": boxes, "scores": scores, "what": what, "labels": labels})
    recon = parse.reconstruction
    recon = None if recon is None else recon.detach().cpu().float().clamp(0, 1)
    return out, recon


def _rows(codes: Tensor, n: int) -> Tensor:
    """``codes`` as ``[n, A]`` (one row per object)."""
    if codes.dim() == 2:
        return codes
    return codes.reshape(n, -1) if n else codes.reshape(0, 0)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))


def _cores(starts: list[int], tile: int) -> list[tuple[float, float]]:
    """Per tile the interval of box centres it owns: up to the middle of each overlap."""
    bounds = [(starts[k + 1] + starts[k] + tile) / 2 for k in range(len(starts) - 1)]
    lows = [-math.inf, *bounds]
    highs = [*bounds, math.inf]
    return list(zip(lows, highs))


def tile_parse(
    model,
    image: Tensor,
    tile: int | tuple[int, int] | None = None,
    overlap: int | None = None,
    threshold: float | None = None,
    batch_size: int = 8,
    nms_iou: float = 0.5,
):
    """Parse one image in overlapping tiles and merge the detections (see the module docstring).

    Args:
        model: a scene model; ``tile`` defaults to its fixed input size (SSDIR) or four MIST patch sides.
        image: ``[C, H, W]`` (or ``[1, C, H, W]``) in [0, 1] with the model's channels.
        tile: tile side or ``(H, W)`` (required for a fully convolutional model).
        overlap: pixels shared by neighbouring tiles (default a quarter of the tile's shorter side);
            it should exceed an object's side so that every object lies whole in the tile owning it.
        threshold: presence threshold (default the model's own).
        batch_size: tiles per ``parse`` call.
        nms_iou: IoU above which the weaker of two merged detections is dropped.

    Returns:
        a :class:`~ppl_scenes.models.SceneParse` of one image (boxes in the image's pixels, the tiles'
        reconstructions stitched core by core, or None).

    Raises:
        ValueError: a bad image, tile or overlap.
    """
    x = image[0] if image.dim() == 4 and image.shape[0] == 1 else image
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"image must be [C, H, W], got shape {tuple(getattr(image, 'shape', ()))}")
    size = _tile_size(model, tile)
    if size is None:
        raise ValueError("tile_parse needs a tile size for a fully convolutional model (tile=...)")
    threshold = _check_threshold(threshold)
    batch_size = check_positive_int(batch_size, "batch_size")
    fixed = _fixed_input_size(model) is not None
    _, height, width = x.shape
    th, tw = size if fixed else (min(size[0], height), min(size[1], width))
    ov = min(th, tw) // 4 if overlap is None else int(overlap)
    if isinstance(overlap, bool) or ov < 0 or ov >= min(th, tw):
        raise ValueError(f"overlap must be an int in [0, {min(th, tw)}) pixels, got {overlap!r}")
    padded = F.pad(x, (0, max(0, tw - width), 0, max(0, th - height)))
    ys, xs = _starts(height, th, ov), _starts(width, tw, ov)
    cores_y, cores_x = _cores(ys, th), _cores(xs, tw)
    origins = [(y, xx, cy, cx) for y, cy in zip(ys, cores_y) for xx, cx in zip(xs, cores_x)]
    device = model.device
    kept: list[dict[str, Tensor | None]] = []
    canvas = None
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        batch = torch.stack([padded[:, y : y + th, xx : xx + tw] for y, xx, _, _ in chunk]).to(device)
        parses, recon = _parse_batch(model, batch, threshold)
        for k, ((y, xx, (ylo, yhi), (xlo, xhi)), p) in enumerate(zip(chunk, parses)):
            boxes = p["boxes"] + torch.tensor([xx, y, xx, y], dtype=torch.float32)
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            own = (cx >= xlo) & (cx < xhi) & (cy >= ylo) & (cy < yhi)
            kept.append({k2: (None if v is None else v[own]) for k2, v in {**p, "boxes": boxes}.items()})
            if recon is not None:
                if canvas is None:
                    canvas = torch.zeros(recon.shape[1], height, width)
                y0, y1 = max(0, round(max(ylo, 0))), min(height, round(min(yhi, height)))
                x0, x1 = max(0, round(max(xlo, 0))), min(width, round(min(xhi, width)))
                canvas[:, y0:y1, x0:x1] = recon[k, :, y0 - y : y1 - y, x0 - xx : x1 - xx]
    boxes = torch.cat([k["boxes"] for k in kept]).reshape(-1, 4)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    scores = torch.cat([k["scores"] for k in kept])
    what = None if any(k["what"] is None for k in kept) else torch.cat([k["what"] for k in kept])
    labels = None if any(k["labels"] is None for k in kept) else torch.cat([k["labels"] for k in kept])
    wide = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep = torch.nonzero(wide).flatten()
    if len(origins) > 1 and len(keep):
        keep = keep[nms(boxes[keep], scores[keep], nms_iou)]
        keep = keep.sort().values
    return SceneParse(
        boxes=[boxes[keep]],
        scores=[scores[keep]],
        what=None if what is None else [what[keep]],
        labels=None if labels is None else [labels[keep]],
        reconstruction=None if canvas is None else canvas[None],
    )


def _resolve(paths: object, skip_bad: bool) -> FoundImages:
    if isinstance(paths, FoundImages):
        return paths
    if isinstance(paths, Sequence) and paths and all(isinstance(p, ImageEntry) for p in paths):
        return FoundImages(list(paths))
    return find_images(paths, skip_bad=skip_bad)


def _safe_stem(name: str) -> str:
    """A file-name-safe stem of an image name (``dir/a.png`` -> ``a``, ``s.npy::3`` -> ``s_3``)."""
    path, _, part = name.partition("::")
    stem = os.path.splitext(os.path.basename(path))[0] + ("_" + part if part else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:80] or "image"


def _draw(image: Tensor, boxes: Tensor, recon: Tensor | None, title: str, path: Path) -> Path:
    images = image[None].clamp(0, 1)
    recons = None if recon is None or recon.shape != image.shape else recon[None].clamp(0, 1)
    plot_scenes(images, pred_boxes=[boxes], reconstructions=recons, titles=[title], path=path, max_images=1)
    return path


def parse_files(
    model,
    paths: object,
    threshold: float | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    tile: int | tuple[int, int] | None = None,
    overlap: int | None = None,
    progress: bool = True,
    skip_bad: bool = False,
    figures_dir: str | os.PathLike | None = None,
    keep_reconstructions: bool = False,
    nms_iou: float = 0.5,
) -> dict[str, Any]:
    """Parse every image of ``paths`` with ``model`` into COCO-format records (module docstring).

    Args:
        model: a trained scene model (SPAIR, GMAIR, SSDIR, MIST; any object with ``parse``).
        paths: folders (recursive), globs, files or entry names (``stack.npy::3``), or the result
            of :func:`~ppl_scenes.data.images.find_images`.
        threshold: report objects scoring at least this (default: the model's own threshold).
        batch_size: images (or tiles) per ``parse`` call; equal-sized images are batched together.
        device: move the model there first (default: where it is).
        tile: parse images larger than this in tiles (side or ``(H, W)``); default: whole images for
            fully convolutional models, the input size for SSDIR, four patch sides for MIST. Set it
            to bound memory on very large images.
        overlap: pixels shared by neighbouring tiles (default a quarter of the tile).
        progress: a progress bar over the files.
        skip_bad: skip undecodable files with a warning (listed in ``records["skipped"]``).
        figures_dir: draw each image with its boxes and the reconstruction there (``<id>_<name>.png``).
        keep_reconstructions: keep each image's reconstruction in ``records["reconstructions"]``.
        nms_iou: IoU of the non-maximum suppression that merges tiles.

    Returns:
        the records.

    Raises:
        ImageLevelModelError: a model that reports no objects (saccade, resnet).
        ImageInputError: bad paths, an image smaller than the model's smallest input.
        UnreadableImageError: an undecodable file (without ``skip_bad``).
        OutputPathError: ``figures_dir`` in a missing folder.
    """
    _check_parsable(model)
    threshold = _check_threshold(threshold)
    batch_size = check_positive_int(batch_size, "batch_size")
    folder = None if figures_dir is None else _figures_folder(figures_dir)
    found = _resolve(paths, skip_bad)
    tile_size = _tile_size(model, tile)
    fixed = _fixed_input_size(model) is not None
    if not fixed:
        minimum = tuple(model.min_image_size())
        for e in found.entries:
            if e.size[0] < minimum[0] or e.size[1] < minimum[1]:
                raise ImageInputError(
                    f"image {e.name!r} is {e.size[0]}x{e.size[1]}, smaller than the model's smallest "
                    f"input {minimum[0]}x{minimum[1]}"
                )
    if device is not None:
        model.to(device)
    model_device = model.device
    channels = model.config.channels
    if folder is not None:
        folder.mkdir(exist_ok=True)

    records: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": _categories(model),
        "codes": {},
        "skipped": [path for path, _ in found.skipped],
        "ignored": len(found.ignored),
    }
    if keep_reconstructions:
        records["reconstructions"] = {}
    pending: list[tuple[ImageEntry, Tensor]] = []

    def add(entry: ImageEntry, image: Tensor, p: dict[str, Tensor | None], recon: Tensor | None) -> None:
        image_id = len(records["images"]) + 1
        h, w = image.shape[-2:]
        records["images"].append({"id": image_id, "file_name": entry.name, "width": int(w), "height": int(h)})
        boxes, scores = p["boxes"], p["scores"]
        labels, what = p["labels"], p["what"]
        for j in range(len(boxes)):
            x0, y0, x1, y1 = (float(v) for v in boxes[j])
            ann_id = len(records["annotations"]) + 1
            bw, bh = x1 - x0, y1 - y0
            records["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "bbox": [round(x0, 3), round(y0, 3), round(bw, 3), round(bh, 3)],
                    "area": round(bw * bh, 3),
                    "score": round(float(scores[j]), 6),
                    "category_id": 1 if labels is None else int(labels[j]) + 1,
                    "iscrowd": 0,
                }
            )
            if what is not None:
                records["codes"][ann_id] = what[j].numpy().astype(np.float32)
        if keep_reconstructions and recon is not None:
            records["reconstructions"][image_id] = recon
        if folder is not None:
            title = f"{os.path.basename(entry.name)}: {len(boxes)}"
            _draw(image, boxes, recon, title, folder / f"{image_id:05d}_{_safe_stem(entry.name)}.png")

    def flush() -> None:
        if not pending:
            return
        x = torch.stack([im for _, im in pending]).to(model_device)
        parses, recon = _parse_batch(model, x, threshold)
        for k, ((entry, image), p) in enumerate(zip(pending, parses)):
            add(entry, image, p, None if recon is None else recon[k])
        pending.clear()

    bar = tqdm(found.entries, desc="parsing", unit="file", disable=not progress)
    for entry in bar:
        try:
            image = read_image(entry, channels)
        except UnreadableImageError as err:
            if not skip_bad:
                raise
            warnings.warn(f"skipped: {err}", stacklevel=2)
            records["skipped"].append(entry.name)
            continue
        h, w = image.shape[-2:]
        tiled = tile_size is not None and (fixed or h > tile_size[0] or w > tile_size[1])
        if tiled:
            flush()
            parse = tile_parse(model, image, tile_size, overlap, threshold, batch_size, nms_iou)
            p = {
                "boxes": parse.boxes[0],
                "scores": parse.scores[0],
                "what": None if parse.what is None else parse.what[0],
                "labels": None if parse.labels is None else parse.labels[0],
            }
            add(entry, image, p, None if parse.reconstruction is None else parse.reconstruction[0])
            continue
        if pending and (pending[0][1].shape != image.shape or len(pending) >= batch_size):
            flush()
        pending.append((entry, image))
    flush()
    return records


# -- writing --------------------------------------------------------------------------------------------


def _coco_part(records: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(records, Mapping) or not all(k in records for k in ("images", "annotations")):
        raise ValueError("records must be what parse_files returns (a dict with 'images' and 'annotations')")
    categories = records.get("categories") or [{"id": 1, "name": "object"}]
    return {"images": records["images"], "annotations": records["annotations"], "categories": categories}


def write_coco(records: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the records' ``images``, ``annotations`` and ``categories`` as a COCO JSON file.

    Raises:
        OutputPathError: the folder of ``path`` does not exist.
    """
    p = check_output_path(path, "COCO file")
    coco = _coco_part(records)
    p.write_text(json.dumps(coco, indent=1))
    return p


def write_codes(records: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write each annotation's ``z_what`` to an ``.npz`` file, keyed by the annotation id (as text).

    Raises:
        OutputPathError: the folder of ``path`` does not exist.
        ValueError: the model gave no codes (e.g. MIST's classifier-free parse).
    """
    p = check_output_path(path, "codes file")
    codes = records.get("codes") if isinstance(records, Mapping) else None
    if codes is None or (records.get("annotations") and not codes):
        raise ValueError("the records hold no codes: the model's parse gives no 'what'")
    with open(p, "wb") as f:  # an open file: numpy would append .npz to a name without it
        np.savez(f, **{str(k): np.asarray(v, dtype=np.float32) for k, v in codes.items()})
    return p


CSV_COLUMNS = ("annotation_id", "image_id", "file_name", "x", "y", "width", "height", "score", "category_id")


def write_csv(records: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write one row per object, the columns of :data:`CSV_COLUMNS` (box ``x, y, width, height`` in pixels).

    Raises:
        OutputPathError: the folder of ``path`` does not exist.
    """
    p = check_output_path(path, "CSV file")
    coco = _coco_part(records)
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    with open(p, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for a in coco["annotations"]:
            x, y, w, h = a["bbox"]
            row = [a["id"], a["image_id"], names.get(a["image_id"], ""), x, y, w, h]
            writer.writerow([*row, a.get("score", ""), a.get("category_id", 1)])
    return p


def draw_parses(
    records: Mapping[str, Any], figures_dir: str | os.PathLike, channels: int | None = None
) -> list[Path]:
    """One figure per image: the image with its boxes, and the reconstruction when the records keep it.

    Images are read again from their ``file_name``; reconstructions come from
    ``records["reconstructions"]`` (``parse_files(..., keep_reconstructions=True)``). Files are named
    ``<image id>_<file name>.png``.

    Returns:
        the figures' paths.

    Raises:
        OutputPathError: ``figures_dir`` lies in a missing folder.
    """
    folder = _figures_folder(figures_dir)
    coco = _coco_part(records)
    folder.mkdir(exist_ok=True)
    recons = records.get("reconstructions") or {}
    by_image: dict[int, list[list[float]]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    out = []
    for im in coco["images"]:
        recon = recons.get(im["id"])
        want = channels if channels is not None else (None if recon is None else recon.shape[0])
        image = read_image(im["file_name"], want)
        xywh = torch.tensor(by_image.get(im["id"], []), dtype=torch.float32).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        title = f"{os.path.basename(im['file_name'])}: {len(boxes)}"
        out.append(
            _draw(image, boxes, recon, title, folder / f"{im['id']:05d}_{_safe_stem(im['file_name'])}.png")
        )
    return out


# -- ground truth and scores -------------------------------------------------------------------------


def _norm(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/"))


def _match_file(file_name: str, entries: Sequence[ImageEntry]) -> ImageEntry | None:
    """The entry named ``file_name``: exactly, else by a trailing path, else by a unique base name."""
    target = _norm(file_name)
    exact = [e for e in entries if _norm(e.name) == target]
    if exact:
        return exact[0]
    suffix = [e for e in entries if _norm(e.name).endswith("/" + target)]
    if len(suffix) == 1:
        return suffix[0]
    base = os.path.basename(target)
    by_base = [e for e in entries if os.path.basename(_norm(e.name)) == base]
    if len(by_base) == 1:
        return by_base[0]
    if len(suffix) > 1 or len(by_base) > 1:
        raise AnnotationError(f"annotation file_name {file_name!r} matches several images given")
    return None


def _finite_box(bbox: object) -> bool:
    return (
        isinstance(bbox, list | tuple)
        and len(bbox) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
        and bbox[2] >= 0
        and bbox[3] >= 0
    )


def load_coco_annotations(
    annotations: str | os.PathLike | Mapping[str, Any], image_paths: object
) -> dict[str, Any]:
    """Read and check COCO ground truth, matching its images to the files given.

    Each image's ``file_name`` is matched to the images found in ``image_paths`` exactly, else by a
    trailing part of the path, else by a unique base name; its ``path`` key is set to the match.
    Missing ``iscrowd`` (0), ``area`` (box area), ``category_id`` (1), annotation ``id`` and
    ``categories`` are filled in.

    Args:
        annotations: a COCO JSON file or its parsed dict.
        image_paths: folders, globs or files holding the images (see ``find_images``).

    Returns:
        the checked COCO dict (a copy).

    Raises:
        AnnotationError: not JSON, not COCO (``images`` / ``annotations`` lists, boxes ``[x, y, w,
            h]``), annotations of unknown images, or files named that are not among the images given.
        ImageInputError: bad ``image_paths``.
    """
    if isinstance(annotations, Mapping):
        data: Any = json.loads(json.dumps(annotations))
        where = "annotations"
    else:
        where = os.fspath(annotations)
        if not os.path.isfile(where):
            raise AnnotationError(f"annotations file {where!r} does not exist")
        try:
            data = json.loads(Path(where).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise AnnotationError(f"{where!r} is not JSON ({err})") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise AnnotationError(f"{where!r} is not COCO: it needs 'images' and 'annotations' lists")
    images = data["images"]
    ids = set()
    for im in images:
        if (
            not isinstance(im, dict)
            or not isinstance(im.get("id"), int)
            or not isinstance(im.get("file_name"), str)
        ):
            raise AnnotationError(f"{where!r} is not COCO: each image needs an int 'id' and a 'file_name'")
        if im["id"] in ids:
            raise AnnotationError(f"{where!r}: image id {im['id']} is used twice")
        ids.add(im["id"])
    if not images:
        raise AnnotationError(f"{where!r} lists no images")
    used_ids = set()
    for k, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or a.get("image_id") not in ids or not _finite_box(a.get("bbox")):
            raise AnnotationError(
                f"{where!r}: annotation {k} needs the 'image_id' of a listed image and a 'bbox' [x, y, w, h]"
            )
        a.setdefault("category_id", 1)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
        if "id" not in a or a["id"] in used_ids:
            a["id"] = max(used_ids, default=0) + 1
        used_ids.add(a["id"])
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        cats = sorted({a["category_id"] for a in data["annotations"]} or {1})
        data["categories"] = [{"id": c, "name": str(c)} for c in cats]
    found = _resolve(image_paths, skip_bad=False)
    missing: list[str] = []
    matched: dict[str, int] = {}
    for im in images:
        entry = _match_file(im["file_name"], found.entries)
        if entry is None:
            missing.append(im["file_name"])
            continue
        if entry.name in matched:
            raise AnnotationError(
                f"the annotations list {entry.name!r} twice (ids {matched[entry.name]}, {im['id']})"
            )
        matched[entry.name] = im["id"]
        im["path"] = entry.name
        h, w = entry.size
        if ("width" in im and im["width"] != w) or ("height" in im and im["height"] != h):
            raise AnnotationError(
                f"{im['file_name']!r} is {h}x{w} but the annotations say {im.get('height')}x{im.get('width')}"
            )
        im.setdefault("width", w)
        im.setdefault("height", h)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise AnnotationError(
            f"the annotations name files not given: {', '.join(map(repr, missing[:3]))}{more}"
        )
    return data


def _quiet_coco(truth: Mapping[str, Any]):
    """pycocotools' COCO of the truth, every object of the one category 1 (class-agnostic scoring)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {
        "images": [{k: v for k, v in im.items() if k != "path"} for im in truth["images"]],
        "annotations": [{**a, "category_id": 1} for a in truth["annotations"]],
        "categories": [{"id": 1, "name": "object"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def score_detections(
    records: Mapping[str, Any], truth: Mapping[str, Any], count_threshold: float | None = None
) -> dict[str, float]:
    """COCO scores of detection records against checked ground truth (:func:`load_coco_annotations`).

    Record images are matched to the truth's by name (the truth image's ``path``, else its
    ``file_name``); every truth image needs a record. AP is class-agnostic (``useCats = 0``) with up
    to ``max(100, most detections in an image)`` detections per image.

    Args:
        records: :func:`parse_files`'s records (or any COCO dict with ``score`` on each annotation).
        truth: the ground truth.
        count_threshold: count the detections scoring at least this (default all of them).

    Returns:
        ``ap50``, ``ap_coco`` (AP@[0.5:0.95]; both NaN when the truth holds no object),
        ``count_accuracy``, ``count_mae``, ``num_images``, ``num_objects`` and ``num_detections``.

    Raises:
        AnnotationError: a truth image without a record.
    """
    from pycocotools.cocoeval import COCOeval  # AP by the COCO rules

    coco = _coco_part(records)
    by_name = {im["file_name"]: im["id"] for im in coco["images"]}
    to_truth: dict[int, int] = {}
    for im in truth["images"]:
        rid = by_name.get(im.get("path", im["file_name"]), by_name.get(im["file_name"]))
        if rid is None:
            raise AnnotationError(f"no detections record for {im['file_name']!r}")
        to_truth[rid] = im["id"]
    detections = []
    for a in coco["annotations"]:
        if a["image_id"] in to_truth:
            box = [float(v) for v in a["bbox"]]
            score = float(a.get("score", 1.0))
            detections.append(
                {"image_id": to_truth[a["image_id"]], "bbox": box, "score": score, "category_id": 1}
            )
    truth_ids = [im["id"] for im in truth["images"]]
    objects = {i: 0 for i in truth_ids}
    for a in truth["annotations"]:
        if not a.get("iscrowd", 0):
            objects[a["image_id"]] += 1
    found = {i: 0 for i in truth_ids}
    for d in detections:
        if count_threshold is None or d["score"] >= count_threshold:
            found[d["image_id"]] += 1
    num_objects = sum(objects.values())
    ap50 = ap = float("nan")
    if num_objects and not detections:
        ap50 = ap = 0.0
    elif num_objects:
        gt = _quiet_coco(truth)
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(detections)
            ev = COCOeval(gt, dt, "bbox")
            ev.params.useCats = 0
            ev.params.imgIds = truth_ids
            most = max(np.bincount([d["image_id"] for d in detections]).max(), 100)
            ev.params.maxDets = [1, 10, int(most)]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        ap, ap50 = (float(v) if v >= 0 else float("nan") for v in ev.stats[:2])
    pred = [found[i] for i in truth_ids]
    true = [objects[i] for i in truth_ids]
    return {
        "ap50": ap50,
        "ap_coco": ap,
        "count_accuracy": count_accuracy(pred, true),
        "count_mae": count_mae(pred, true),
        "num_images": len(truth_ids),
        "num_objects": num_objects,
        "num_detections": len(detections),
    }


def score_coco(
    model,
    paths: object,
    annotations: str | os.PathLike | Mapping[str, Any],
    threshold: float | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    tile: int | tuple[int, int] | None = None,
    overlap: int | None = None,
    progress: bool = False,
    candidate_threshold: float = 0.01,
) -> dict[str, float]:
    """Score ``model`` on the images of ``paths`` against COCO ground truth.

    Only the images the annotations list are parsed. AP ranks candidates down to
    ``candidate_threshold`` (for models whose ``parse`` takes a threshold); counts are the objects the
    model reports present (its own threshold, or ``threshold``).

    Returns:
        :func:`score_detections`'s dict: ``ap50``, ``ap_coco``, ``count_accuracy``, ``count_mae``,
        ``num_images``, ``num_objects``, ``num_detections``.

    Raises:
        AnnotationError: annotations that are not COCO or name files not given.
        ImageLevelModelError: an image-level model (and the errors of :func:`parse_files`).
    """
    _check_parsable(model)
    threshold = _check_threshold(threshold)
    truth = load_coco_annotations(annotations, paths)
    found = _resolve(paths, skip_bad=False)
    by_name = {e.name: e for e in found.entries}
    entries = list({im["path"]: by_name[im["path"]] for im in truth["images"]}.values())
    own = _presence_threshold(model) if threshold is None else threshold
    candidates = own
    if _accepts_threshold(model) and own is not None:
        candidates = min(float(candidate_threshold), own)
    records = parse_files(model, entries, candidates, batch_size, device, tile, overlap, progress=progress)
    return score_detections(records, truth, count_threshold=own)


# -- unlabelled validation ------------------------------------------------------------------------------


def _to_channels(x: Tensor, channels: int | None) -> Tensor:
    """A batch ``[B, c, H, W]`` with ``channels`` (luminance or repeated gray; unchanged when None)."""
    if channels is None or x.shape[1] == channels:
        return x
    if channels == 1 and x.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).reshape(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True)
    if channels == 3 and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1).contiguous()
    raise ImageInputError(f"images have {x.shape[1]} channels, the model {channels}")


def _has_elbo(model) -> bool:
    return isinstance(model, Variational)


def evaluate_unlabelled(
    model,
    dataset,
    num_particles: int = 1,
    batch_size: int = 16,
    max_scenes: int | None = None,
    progress: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """What can be measured without labels: ELBO per image, counts per image, reconstruction error.

    Args:
        model: a scene model; the ELBO needs a Pyro ``model``/``guide`` pair (SPAIR, GMAIR, SSDIR),
            MIST gets the counts and the reconstruction error only.
        dataset: ``(image, target)`` pairs, e.g. ``ImageFolderScenes(..., split="val")``; consecutive
            items of one size are batched.
        num_particles: ELBO samples per image.
        batch_size: items per batch.
        max_scenes: use the first items only.
        progress: a progress bar.
        seed: seed of the ELBO's samples (the global random state is left as it was).

    Returns:
        ``elbo`` (mean per image, nats) and ``elbo_per_pixel`` (per pixel and channel) where there
        is an ELBO; ``rmse`` of the reconstructions where ``parse`` gives them; ``count_mean``,
        ``count_std`` and ``count_histogram`` (a list: entry ``k`` is how many images hold ``k``
        objects) of the objects the model reports present; ``num_images``.

    Raises:
        ImageLevelModelError: an image-level model.
        ValueError: an empty dataset, bad arguments.
    """
    from pyro.infer import Trace_ELBO

    _check_parsable(model)
    num_particles = check_positive_int(num_particles, "num_particles")
    batch_size = check_positive_int(batch_size, "batch_size")
    n = (
        len(dataset)
        if max_scenes is None
        else min(len(dataset), check_positive_int(max_scenes, "max_scenes"))
    )
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    elbo_fn = Trace_ELBO(num_particles=num_particles) if _has_elbo(model) else None
    device = model.device
    channels = model.config.channels
    elbos, per_pixel, counts, sq_err, pixels = [], [], [], 0.0, 0

    def batches():  # consecutive items of one size, at most batch_size: one batch in memory at a time
        batch: list[Tensor] = []
        for i in range(n):
            image = dataset[i][0]
            if batch and (len(batch) == batch_size or batch[0].shape != image.shape):
                yield batch
                batch = []
            batch.append(image)
        yield batch

    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for batch in tqdm(batches(), desc="validating", leave=False, disable=not progress):
                x = _to_channels(torch.stack(batch), channels).to(device)
                if elbo_fn is not None:
                    model.eval()
                    with torch.no_grad():
                        loss = float(elbo_fn.loss(model.model, model.guide, x))
                    elbos.append(-loss)
                    per_pixel.append(-loss / x[0].numel())
                parses, recon = _parse_batch(model, x, None)
                counts += [len(p["boxes"]) for p in parses]
                if recon is not None and recon.shape == x.shape:
                    sq_err += float(((recon - x.cpu()) ** 2).sum())
                    pixels += x.numel()
    finally:
        model.train(was_training)
    results: dict[str, Any] = {}
    if elbos:
        results["elbo"] = sum(elbos) / n
        results["elbo_per_pixel"] = sum(per_pixel) / n
    if pixels:
        results["rmse"] = math.sqrt(sq_err / pixels)
    arr = np.asarray(counts)
    results.update(
        count_mean=float(arr.mean()),
        count_std=float(arr.std()),
        count_histogram=np.bincount(arr).tolist(),
        num_images=n,
    )
    return results
