"""The official EoMT evaluation windows as an mmseg inference mode (``test_cfg.mode='windows'``).

The image's short side is resized to the crop (bilinear with antialiasing, i.e. PIL's BILINEAR,
which the official applies to the uint8 image), the long side is covered by ``ceil(long /
short)`` square crops evenly spaced from edge to edge, the crops' scores are averaged where they
overlap and resized back to the input size. benchmark-vfm-ss evaluates the same way.

``window_inference`` works for any ``EncoderDecoder`` (it calls ``encode_decode``);
``BatchedSlideEncoderDecoder`` (and so ``EoMT``) runs it for
``test_cfg=dict(mode='windows', crop_size=(512, 512))`` (mmseg's plain ``EncoderDecoder`` knows
only ``whole`` and ``slide``); ``crop_batch`` (default 4 on a GPU, 1 on the CPU) crops run at a
time.
"""
import math
from typing import List

import torch
import torch.nn.functional as F


def window_starts(length: int, crop: int) -> List[int]:
    """Start offsets of the official windows along a side of ``length`` (>= ``crop``)."""
    num = math.ceil(length / crop)
    overlap = num * crop - length
    step = crop - (overlap / (num - 1) if overlap > 0 else 0)
    return [int(j * step) for j in range(num)]


def window_inference(model, inputs: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
    """(B, C, H, W) scores of ``inputs`` (B, 3, H, W) by the official evaluation windows."""
    cfg = model.test_cfg
    if cfg.crop_size[0] != cfg.crop_size[1]:
        raise ValueError(f"test_cfg mode='windows' takes square crops (the official windows); "
                         f'got crop_size={tuple(cfg.crop_size)}: set crop_size=(n, n), or use '
                         "mode='slide' for rectangular crops")
    crop = cfg.crop_size[0]
    batch, _, h, w = inputs.shape
    factor = max(cfg.crop_size[0] / h, cfg.crop_size[1] / w)
    size = (round(h * factor), round(w * factor))
    x = inputs
    if size != (h, w):
        x = F.interpolate(inputs, size, mode='bilinear', align_corners=False, antialias=True)
    rows = size[0] > size[1]  # windows along the long side
    starts = window_starts(max(size), crop)
    crop_batch = cfg.get('crop_batch')
    if crop_batch is None:
        crop_batch = 1 if inputs.device.type == 'cpu' else 4
    per_chunk = max(1, int(crop_batch) // batch)
    sums = x.new_zeros((batch, model.out_channels, *size))
    counts = x.new_zeros((1, 1, *size))
    metas = [dict(meta, img_shape=torch.Size((crop, crop))) for meta in batch_img_metas]
    for first in range(0, len(starts), per_chunk):
        chunk = starts[first:first + per_chunk]
        crops = torch.cat([x[:, :, s:s + crop] if rows else x[..., s:s + crop] for s in chunk])
        logits = model.encode_decode(crops, metas * len(chunk)).split(batch)
        for s, logit in zip(chunk, logits):
            if rows:
                sums[:, :, s:s + crop] += logit
                counts[:, :, s:s + crop] += 1
            else:
                sums[..., s:s + crop] += logit
                counts[..., s:s + crop] += 1
    scores = sums / counts
    if size != (h, w):
        scores = F.interpolate(scores, (h, w), mode='bilinear', align_corners=False)
    return scores
