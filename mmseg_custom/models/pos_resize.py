"""Bicubic resizing of position-embedding grids as matrix products, for traced sizes.

While tracing (ONNX export), a patch-grid size is a tensor: ``F.interpolate(scale_factor=...)``
cannot take it, and the antialiased bicubic (``_upsample_bicubic2d_aa``) has no ONNX form. The
same resize is one matrix per axis, ``M_h @ grid @ M_w^T``, built here from the sizes with
tensor ops, so the graph follows the input size. Trunks use it only while tracing; eager code
keeps ``F.interpolate``.
"""
import math
from typing import Optional, Sequence

import torch


def cubic_resize_matrix(out_len, in_len: int, in_per_out, antialias: bool) -> torch.Tensor:
    """(out_len, in_len) matrix of PyTorch's bicubic ``F.interpolate`` along one axis
    (align_corners=False): output i = sum_j M[i, j] input j.

    Args:
        out_len (int | Tensor): Output length (a traced size while exporting).
        in_len (int): Input length.
        in_per_out (float | Tensor): PyTorch's ``scale``: in_len / out_len for ``size=``,
            1 / scale_factor for ``scale_factor=``.
        antialias (bool): Without, Keys' kernel (A = -0.75) at ``scale * (i + 0.5) - 0.5`` with
            edge indices clamped; with, the antialiasing kernel (A = -0.5, stretched by the scale
            when downsampling), taps outside the input dropped and each row normalised, as
            PyTorch's ``_upsample_bicubic2d_aa`` computes.
    """
    dst = torch.arange(out_len, dtype=torch.float32)
    cols = torch.arange(in_len, dtype=torch.float32)
    s = torch.as_tensor(in_per_out, dtype=torch.float32)
    if antialias:
        a = -0.5
        invscale = 1.0 / torch.clamp(s, min=1.0)
        x = ((cols[None, :] + 0.5 - s * (dst[:, None] + 0.5)) * invscale).abs()
        w = torch.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                        torch.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a,
                                    torch.zeros_like(x)))
        return w / w.sum(1, keepdim=True)
    a = -0.75
    src = s * (dst + 0.5) - 0.5
    i0 = torch.floor(src)
    t = src - i0

    def conv1(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def conv2(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    matrix = 0
    for k, w in enumerate((conv2(t + 1), conv1(t), conv1(1 - t), conv2(2 - t))):
        idx = (i0 + (k - 1)).clamp(0, in_len - 1)
        matrix = matrix + w[:, None] * (idx[:, None] == cols[None, :]).float()
    return matrix


def resize_grid(grid: torch.Tensor, my: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
    """(m_h, m_w, D) grid -> (1, h * w, D) through the axis matrices (h, m_h) and (w, m_w)."""
    out = torch.matmul(torch.matmul(my, grid.permute(2, 0, 1)), mx.transpose(0, 1))  # (D, h, w)
    return out.flatten(1).transpose(0, 1)[None]


def resample_abs_pos_embed(posemb: torch.Tensor, new_size: Sequence,
                           old_size: Optional[Sequence[int]] = None, num_prefix_tokens: int = 1,
                           antialias: bool = True) -> torch.Tensor:
    """timm's ``resample_abs_pos_embed`` with its defaults (bicubic, align_corners=False) for
    traced sizes ``new_size``: (1, P + old_h * old_w, D) -> (1, P + h * w, D). It has no
    size-match early-out, as timm's has none while exporting; at the same size the antialiased
    matrix is the identity."""
    if old_size is None:
        side = int(math.sqrt(posemb.shape[1] - num_prefix_tokens))
        old_size = (side, side)
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    oh, ow = int(old_size[0]), int(old_size[1])
    mats = [cubic_resize_matrix(size, old, old / torch.as_tensor(size).float(), antialias)
            for size, old in zip(new_size, (oh, ow))]
    out = resize_grid(grid.float().reshape(oh, ow, -1), *mats).to(posemb.dtype)
    return torch.cat((prefix, out), dim=1) if num_prefix_tokens else out
