"""Export-time stand-ins for model code that computes with Python numbers taken from shapes.

While tracing, a size is a tensor. Code that feeds a size into an argument that must be a Python
number (``F.interpolate(scale_factor=...)``) cannot be traced, and a Python branch on a size is
frozen at the traced size. Each stand-in here computes the same values as the method it stands in
for, and is installed on the instances of one model only for the duration of one export
(:func:`installed`).
"""
import contextlib
import math
import sys
from typing import Iterator

import torch
import torch.nn as nn


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


def _resize_grid(grid: torch.Tensor, my: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
    """(m_h, m_w, D) grid -> (1, h * w, D) through the axis matrices (h, m_h) and (w, m_w)."""
    out = torch.matmul(torch.matmul(my, grid.permute(2, 0, 1)), mx.transpose(0, 1))  # (D, h, w)
    return out.flatten(1).transpose(0, 1)[None]


def dinov2_pos_encoding_traceable(trunk: nn.Module, h, w, dtype: torch.dtype) -> torch.Tensor:
    """``DINOv2.interpolate_pos_encoding`` for traced sizes ``h``, ``w``: the same bicubic
    interpolation (scale ``(h + offset) / m`` where the trunk has an offset, else size ``h``),
    as matrix products, and the stored embedding itself at the stored square grid, where the
    PyTorch code skips the interpolation (identity matrices there)."""
    pos = trunk.pos_embed.float()
    n, dim = pos.shape[1] - 1, pos.shape[-1]
    m = int(math.sqrt(n))
    offset = trunk.interpolate_offset or 0.0
    antialias = bool(trunk.interpolate_antialias)
    stored = (torch.as_tensor(h) == m) & (torch.as_tensor(w) == m)
    mats = []
    for size in (h, w):
        size_f = torch.as_tensor(size).float()
        in_per_out = m / (size_f + offset) if offset else m / size_f
        interp = cubic_resize_matrix(size, m, in_per_out, antialias)
        # (size, m) identity rows: the identity at size == m, cut to size rows otherwise. The
        # identity where the code skips the interpolation (the stored grid), and on any axis
        # of unchanged length with antialiasing (PyTorch's antialiased kernel copies it).
        eye = torch.cat((torch.eye(m), torch.zeros(size, m)))[:size]
        same = (torch.as_tensor(size) == m) if antialias else stored
        mats.append(torch.where(stored | same, eye, interp))
    patch_pos = _resize_grid(pos[0, 1:].reshape(m, m, dim), *mats)
    return torch.cat((pos[:, :1], patch_pos), dim=1).to(dtype)


def timm_resample_abs_pos_embed_traceable(posemb, new_size, old_size=None, num_prefix_tokens=1,
                                          interpolation='bicubic', antialias=True,
                                          verbose=False, align_corners=None):
    """timm's ``resample_abs_pos_embed`` (bicubic, with or without antialiasing) for traced
    sizes; it has no size-match early-out while exporting either (timm's ``is_exporting``)."""
    if interpolation != 'bicubic' or align_corners:
        from .export import ExportError
        raise ExportError(f'export: timm position embeddings resampled with {interpolation} '
                          f'(align_corners={align_corners}) have no traceable stand-in.')
    num_pos = posemb.shape[1]
    if old_size is None:
        hw = int(math.sqrt(num_pos - num_prefix_tokens))
        old_size = (hw, hw)
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    oh, ow = int(old_size[0]), int(old_size[1])
    mats = [cubic_resize_matrix(size, old, old / torch.as_tensor(size).float(), antialias)
            for size, old in zip(new_size, (oh, ow))]
    out = _resize_grid(grid.float().reshape(oh, ow, -1), *mats).to(posemb.dtype)
    return torch.cat((prefix, out), dim=1) if num_prefix_tokens else out


@contextlib.contextmanager
def installed(model: nn.Module, grid=None) -> Iterator[None]:
    """Install the stand-ins on ``model``'s modules for one export.

    Args:
        grid ((int, int) | None): The patch grid of a fixed-size export: DINOv2 position
            embeddings and timm rotary tables are then computed once, eagerly, by the model's own
            code, and enter the graph as constants. None (dynamic export): the traceable
            stand-ins compute them in the graph.
    """
    patched, replaced, original = [], [], None
    try:
        for module in model.modules():
            if type(module).__name__ == 'DINOv2' and hasattr(module, 'interpolate_pos_encoding'):
                if grid is not None:
                    with torch.no_grad():
                        table = module.interpolate_pos_encoding(*grid, torch.float32)
                    module.interpolate_pos_encoding = (
                        lambda h, w, dtype, table=table: table.to(dtype))
                else:
                    module.interpolate_pos_encoding = (
                        lambda h, w, dtype, module=module:
                        dinov2_pos_encoding_traceable(module, h, w, dtype))
                patched.append(module)
            if (grid is not None and callable(getattr(module, 'rope_table', None))
                    and getattr(module, 'rope', None) is not None):
                # TimmViT's rotary table of the one grid, computed by timm, as a constant.
                with torch.no_grad():
                    rope = module.rope_table(tuple(grid), torch.device('cpu'))
                module.rope_table = lambda grid, device, rope=rope: rope.to(device)
                patched.append(module)
        # timm's function, wherever a module imported it by name (timm, our TimmViT).
        from timm.layers import pos_embed
        original = pos_embed.resample_abs_pos_embed
        for mod in list(sys.modules.values()):
            if getattr(mod, 'resample_abs_pos_embed', None) is original:
                setattr(mod, 'resample_abs_pos_embed', timm_resample_abs_pos_embed_traceable)
                replaced.append(mod)
        yield
    finally:
        for module in patched:  # back to the class's methods
            for name in ('interpolate_pos_encoding', 'rope_table'):
                module.__dict__.pop(name, None)
        for mod in replaced:
            setattr(mod, 'resample_abs_pos_embed', original)
