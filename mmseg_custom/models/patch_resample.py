"""DINOv2 weights at another patch size and position grid, as Rein converts them.

Rein trains DINOv2 at patch 16 on 512 crops (a 32 x 32 grid) from the official patch-14 weights
(37 x 37 grid): its ``tools/convert_models/convert_dinov2_large_512x512.py`` resamples the patch
embedding kernel (14 x 14 -> 16 x 16) and the stored position embedding (37 x 37 -> 32 x 32), both
bicubic with ``size=`` and ``align_corners=False``, the kernel values otherwise unchanged.
"""
import math
from typing import Dict

import torch
import torch.nn.functional as F
from mmengine.logging import print_log


def resample_patch_and_grid(state_dict: Dict[str, torch.Tensor], patch_size: int,
                            num_patches: int) -> Dict[str, torch.Tensor]:
    """Return ``state_dict`` (official DINOv2 layout) with ``patch_embed.proj.weight`` resampled to
    ``patch_size`` and ``pos_embed`` to a square grid of ``num_patches`` (plus cls), where they
    differ; other tensors are shared, not copied."""
    out = dict(state_dict)
    weight = out['patch_embed.proj.weight']
    if weight.shape[-1] != patch_size or weight.shape[-2] != patch_size:
        out['patch_embed.proj.weight'] = F.interpolate(
            weight.float(), size=(patch_size, patch_size), mode='bicubic',
            align_corners=False).to(weight.dtype)
        print_log(f'DINOv2 weights: patch kernel {tuple(weight.shape[-2:])} resampled to '
                  f'{patch_size} x {patch_size} (bicubic, as Rein)', logger='current')
    pos = out['pos_embed']
    src, dst = pos.shape[1] - 1, num_patches
    if src != dst:
        m, g = math.isqrt(src), math.isqrt(dst)
        if m * m != src or g * g != dst:
            raise ValueError(f'pos_embed grids must be square: {src} -> {dst} patches')
        dim = pos.shape[-1]
        patch_pos = F.interpolate(
            pos[:, 1:].float().reshape(1, m, m, dim).permute(0, 3, 1, 2), size=(g, g),
            mode='bicubic', align_corners=False)
        print_log(f'DINOv2 weights: position grid {m} x {m} resampled to {g} x {g}',
                  logger='current')
        out['pos_embed'] = torch.cat(
            (pos[:, :1], patch_pos.permute(0, 2, 3, 1).reshape(1, g * g, dim).to(pos.dtype)), 1)
    return out
