"""Cross-entropy on logits bilinearly resized to the label size, without the full-size tensors.

mmseg resizes the decode head's logits (4x the token grid) to the crop and applies cross-entropy:
at crop 512 with 150 classes that materialises, and keeps for backward, several tensors of
B x 150 x 512 x 512 floats. Bilinear resizing is separable: chunk by chunk of output rows, we
resize the width of the few source rows the chunk reads, blend row pairs as PyTorch's kernel does,
take the loss, and recompute the chunk in backward (activation checkpointing). Same loss and
gradients (to float rounding); nothing larger than one chunk is kept. Small resized logits
(a few MiB, e.g. the demo's 112 px crops) skip the chunking: there one resize is cheaper than the
bookkeeping, and memory is no concern.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _source_rows(in_size: int, out_size: int, align_corners: bool, device,
                 dtype: torch.dtype) -> Tuple[torch.Tensor, ...]:
    """Rows i0, i1 and weights w0, w1 of bilinear interpolation, as PyTorch computes them (in
    its accumulation type: double for double, float otherwise)."""
    dtype = torch.float64 if dtype == torch.float64 else torch.float32
    dst = torch.arange(out_size, device=device, dtype=dtype)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * scale
    else:
        src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp_min(0)
    i0 = src.long()
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    w1 = src - i0
    return i0, i1, 1 - w1, w1


def _chunk_ce(logits: torch.Tensor, s0: int, s1: int, width: int, align_corners: bool,
              i0, i1, w0, w1, labels: torch.Tensor, ignore_index: int):
    # Width-resize only the source rows this chunk reads (rows are untouched by a resize that
    # keeps the height), then blend row pairs as PyTorch's bilinear kernel does.
    wide = F.interpolate(logits[:, :, s0:s1], size=(s1 - s0, width), mode='bilinear',
                         align_corners=align_corners)
    # index_select, not advanced indexing: its backward (index_add) is far faster on the CPU.
    rows = (wide.index_select(2, i0 - s0) * w0[:, None]
            + wide.index_select(2, i1 - s0) * w1[:, None])
    loss = F.cross_entropy(rows, labels, ignore_index=ignore_index, reduction='sum')
    return loss, rows.detach().max(1).indices


def resized_cross_entropy(
        logits: torch.Tensor,
        labels: torch.Tensor,
        ignore_index: int = 255,
        align_corners: bool = False,
        chunk_rows: int = 64,
        chunk_above: int = 2**22) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed per-pixel cross-entropy of ``resize(logits, labels.shape[-2:])`` against ``labels``.

    Args:
        logits (Tensor): (B, C, h, w).
        labels (Tensor): (B, H, W) long.
        ignore_index (int): Label value that contributes no loss.
        align_corners (bool): As the resize it replaces.
        chunk_rows (int): Output rows computed at a time.
        chunk_above (int): Chunk only when the resized logits would hold more elements than this
            (default 4M: 16 MiB in fp32); below, resize once as mmseg does.

    Returns:
        tuple: summed loss (scalar, differentiable), number of correctly classified non-ignored
        pixels, number of non-ignored pixels.
    """
    H, W = labels.shape[-2:]
    valid = labels != ignore_index
    if logits.shape[0] * logits.shape[1] * H * W <= chunk_above:
        full = F.interpolate(logits, size=(H, W), mode='bilinear', align_corners=align_corners)
        total = F.cross_entropy(full, labels, ignore_index=ignore_index, reduction='sum')
        # max(1).indices: the same first-maximum index, ~15x faster than argmax(1) on the CPU.
        correct = ((full.detach().max(1).indices == labels) & valid).sum()
        return total, correct, valid.sum()
    i0, i1, w0, w1 = _source_rows(logits.shape[2], H, align_corners, logits.device, logits.dtype)
    w0, w1 = w0.to(logits.dtype), w1.to(logits.dtype)
    first, last = i0.tolist(), i1.tolist()
    total = logits.new_zeros(())
    correct = torch.zeros((), dtype=torch.long, device=logits.device)
    for r in range(0, H, chunk_rows):
        sl = slice(r, r + chunk_rows)
        s0, s1 = first[r], max(last[r:r + chunk_rows]) + 1
        args = (logits, s0, s1, W, align_corners, i0[sl], i1[sl], w0[sl], w1[sl], labels[:, sl],
                ignore_index)
        if torch.is_grad_enabled() and logits.requires_grad:
            loss, pred = checkpoint(_chunk_ce, *args, use_reentrant=False)
        else:
            loss, pred = _chunk_ce(*args)
        total = total + loss
        correct += ((pred == labels[:, sl]) & valid[:, sl]).sum()
    return total, correct, valid.sum()
