"""DINOv2 vision transformer, written by hand so that the official checkpoints give the
original's logits: a trunk (see ``trunk.py`` for the interface) of ViT-Split and the baselines.
Token sharing (CTS, see ``token_sharing.py``) adds ``pad(x, value)`` and
``tokenize_shared(x, shared) -> (tokens, plan)``.
"""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from mmseg.registry import MODELS

from ..patch_resample import resample_patch_and_grid
from ..pos_resize import cubic_resize_matrix, resize_grid
from ..weights import load_dinov2_weights, resolve_weights
from .token_sharing import SharePlan
from .trunk import DINOv2Backbone, Trunk, centre_pad, check_indices  # noqa: F401 (re-exported)

ARCHS = {
    'small': dict(embed_dims=384, depth=12, num_heads=6, ffn_type='mlp'),
    'base': dict(embed_dims=768, depth=12, num_heads=12, ffn_type='mlp'),
    'large': dict(embed_dims=1024, depth=24, num_heads=16, ffn_type='mlp'),
    'giant': dict(embed_dims=1536, depth=40, num_heads=24, ffn_type='swiglu'),
}


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class LayerScale(nn.Module):

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim, ), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """DINOv2's fused SwiGLU (giant): hidden = 2/3 of 4*dim, rounded up to a multiple of 8."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class Block(nn.Module):
    """Pre-norm transformer block with layer scale (names match DINOv2 checkpoints)."""

    def __init__(self, dim: int, num_heads: int, ffn_type: str = 'mlp', mlp_ratio: float = 4.0,
                 layer_scale_init: float = 1.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        ffn = {'mlp': Mlp, 'swiglu': SwiGLUFFN}[ffn_type]
        self.mlp = ffn(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``attn_mask``: as ``F.scaled_dot_product_attention``'s (True: attend), as timm's blocks
        take it (EoMT's masked attention)."""
        x = x + self.ls1(self.attn(self.norm1(x), attn_mask))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):

    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


@MODELS.register_module()
class DINOv2(Trunk):
    """DINOv2 ViT (Oquab et al., 2023) with the official parameter names.

    Args:
        arch (str | dict): 'small', 'base', 'large', 'giant', or a dict with ``embed_dims``,
            ``depth``, ``num_heads`` and ``ffn_type`` ('mlp' | 'swiglu').
        patch_size (int): Patch side in pixels. Default 14.
        img_size (int): Side of the pretraining grid the position embedding is stored for
            (518 -> 37x37). Default 518.
        num_register_tokens (int): 0, or 4 for the ``*_reg4`` checkpoints. Default 0.
        interpolate_antialias (bool | None): Antialiased bicubic position-embedding interpolation.
            None: as the official checkpoints (True with registers, else False).
        interpolate_offset (float | None): Offset added to the target grid when interpolating.
            None: as the official checkpoints (0.0 with registers, else 0.1).
        layer_scale_init (float): Initial LayerScale value (official hub models: 1.0).
        pretrained (str | None): Path or URL of DINOv2 weights in the official, timm or Hugging
            Face layout (``.pth``/``.bin``/``.safetensors``), or a size name ('small', 'base',
            'large', 'giant', optionally with '_reg4') for the official file. Loaded in
            ``init_weights()``, never while building the model.
        init_cfg (dict | None): mmengine init config (used only when ``pretrained`` is None).
    """

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 patch_size: int = 14,
                 img_size: int = 518,
                 num_register_tokens: int = 0,
                 interpolate_antialias: Optional[bool] = None,
                 interpolate_offset: Optional[float] = None,
                 layer_scale_init: float = 1.0,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in ARCHS:
                raise ValueError(f'DINOv2: unknown arch {arch!r}; use one of {sorted(ARCHS)} '
                                 'or a dict(embed_dims=, depth=, num_heads=, ffn_type=)')
            arch = ARCHS[arch]
        self.arch = dict(arch)
        dim = self.embed_dims = arch['embed_dims']
        self.num_layers = arch['depth']
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.num_prefix_tokens = 1 + num_register_tokens
        self.interpolate_antialias = (num_register_tokens > 0 if interpolate_antialias is None
                                      else interpolate_antialias)
        self.interpolate_offset = ((0.0 if num_register_tokens else 0.1)
                                   if interpolate_offset is None else interpolate_offset)
        self.pretrained = pretrained

        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        # Unused for segmentation; kept so official checkpoints load strictly. Frozen: a trainable
        # parameter that gets no gradient stops DDP at its second iteration.
        self.mask_token = nn.Parameter(torch.zeros(1, dim), requires_grad=False)
        self.register_tokens = (nn.Parameter(torch.zeros(1, num_register_tokens, dim))
                                if num_register_tokens else None)
        self.blocks = nn.ModuleList(
            Block(dim, arch['num_heads'], arch.get('ffn_type', 'mlp'),
                  arch.get('mlp_ratio', 4.0), layer_scale_init) for _ in range(self.num_layers))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    @classmethod
    def find_weights(cls, cfg: dict) -> Optional[str]:
        return resolve_weights(cfg['pretrained']) if cfg.get('pretrained') else None

    def init_weights(self):
        if self.pretrained is None:
            super().init_weights()
            if not (isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'):
                self._random_init()
            return
        # Weights of another patch size / grid (patch 14 for a patch-16 trunk, as Rein's):
        # resampled as Rein's conversion does.
        state_dict = resample_patch_and_grid(load_dinov2_weights(self.pretrained),
                                             self.patch_size, self.pos_embed.shape[1] - 1)
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        # mask_token is absent from some exports and unused here; anything else is a real mismatch.
        missing = [k for k in missing if k != 'mask_token']
        if missing or unexpected:
            raise RuntimeError(
                f'DINOv2 weights {self.pretrained!r} do not match arch {self.arch} with '
                f'{self.num_register_tokens} register tokens: missing {missing[:8]}, '
                f'unexpected {unexpected[:8]}. Check the trunk arch/num_register_tokens in the config.')

    def _random_init(self):
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:  # adapters injected into the trunk (LoRA) have none
                    nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        """Position embedding for an h x w patch grid, as the official implementation computes it."""
        if torch.jit.is_tracing():
            return self._traced_pos_encoding(h, w, dtype)
        n = self.pos_embed.shape[1] - 1
        if h * w == n and h == w:
            return self.pos_embed.to(dtype)
        pos = self.pos_embed.float()
        dim = pos.shape[-1]
        m = int(math.sqrt(n))
        kwargs = {}
        if self.interpolate_offset:
            # scale_factor (not size) changes the sampling positions; the official code uses it.
            kwargs['scale_factor'] = ((h + self.interpolate_offset) / m,
                                      (w + self.interpolate_offset) / m)
        else:
            kwargs['size'] = (h, w)
        patch_pos = F.interpolate(
            pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2),
            mode='bicubic', antialias=self.interpolate_antialias, **kwargs)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(dtype)

    def _traced_pos_encoding(self, h, w, dtype: torch.dtype) -> torch.Tensor:
        """``interpolate_pos_encoding`` for traced sizes ``h``, ``w`` (ONNX export), which
        ``F.interpolate(scale_factor=...)`` cannot take: the same bicubic as matrix products
        (``pos_resize``), and the identity where the eager code skips the interpolation (the
        stored square grid), so one graph serves every size."""
        pos = self.pos_embed.float()
        n, dim = pos.shape[1] - 1, pos.shape[-1]
        m = int(math.sqrt(n))
        offset = self.interpolate_offset or 0.0
        antialias = bool(self.interpolate_antialias)
        stored = (torch.as_tensor(h) == m) & (torch.as_tensor(w) == m)
        mats = []
        for size in (h, w):
            size_f = torch.as_tensor(size).float()
            in_per_out = m / (size_f + offset) if offset else m / size_f
            interp = cubic_resize_matrix(size, m, in_per_out, antialias)
            # (size, m) identity rows: where the code skips the interpolation, and on any axis
            # of unchanged length with antialiasing (PyTorch's antialiased kernel copies it).
            eye = torch.cat((torch.eye(m), torch.zeros(size, m)))[:size]
            same = (torch.as_tensor(size) == m) if antialias else stored
            mats.append(torch.where(stored | same, eye, interp))
        patch_pos = resize_grid(pos[0, 1:].reshape(m, m, dim), *mats)
        return torch.cat((pos[:, :1], patch_pos), dim=1).to(dtype)

    def tokenize(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Centre-pad to the patch size, embed, add position and prefix tokens."""
        x = centre_pad(x, self.patch_size)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x), dim=1)
        x = x + self.interpolate_pos_encoding(*grid, x.dtype)
        if self.register_tokens is not None:
            reg = self.register_tokens.expand(x.shape[0], -1, -1).to(x.dtype)
            x = torch.cat((x[:, :1], reg, x[:, 1:]), dim=1)
        return x, grid

    def pad(self, x: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        """The image (or a label map) as ``tokenize`` patchifies it."""
        return centre_pad(x, self.patch_size, value)

    def tokenize_shared(self, x: torch.Tensor,
                        shared: torch.Tensor) -> Tuple[torch.Tensor, SharePlan]:
        """``tokenize`` with the superpatches ``shared`` (B, S) as one token each (CTS): the
        patch embedding of the 2x downsampled region plus the 2x2 mean position embedding, as the
        official implementation's bilinear 0.5x resizing of image and embedding grid computes."""
        x = centre_pad(x, self.patch_size)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        plan = SharePlan(grid, shared, self.num_prefix_tokens)
        patches = self.patch_embed(x)
        # Bilinear at scale 0.5 (align_corners=False) samples the 2x2 means: avg_pool2d is it.
        supers = self.patch_embed(F.avg_pool2d(x, 2))
        pos = self.interpolate_pos_encoding(*grid, x.dtype)
        pos_grid = pos[:, 1:].transpose(1, 2).reshape(1, -1, *grid)
        pos_supers = F.avg_pool2d(pos_grid, 2).flatten(2).transpose(1, 2)
        tokens = plan.gather(patches, supers) + plan.gather(pos[:, 1:], pos_supers)
        prefix = [self.cls_token.to(x.dtype) + pos[:, :1]]
        if self.register_tokens is not None:
            prefix.append(self.register_tokens.to(x.dtype))
        prefix = torch.cat(prefix, dim=1).expand(x.shape[0], -1, -1)
        return torch.cat((prefix, tokens), dim=1), plan

    def apply_block(self, block: nn.Module, tokens: torch.Tensor, grid: Tuple[int, int],
                    num_extra: int = 0) -> torch.Tensor:
        return block(tokens)  # positions are in the tokens: extra tokens need nothing

    def to_map(self, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        x = self.norm(tokens)[:, self.num_prefix_tokens:]
        return x.transpose(1, 2).reshape(x.shape[0], -1, *grid)
