"""Content-aware token sharing (CTS; Lu, de Geus, Dubbelman, CVPR 2023) for a frozen trunk.

A policy network scores every *superpatch* (2x2 neighbouring patches) of the image for "holds one
class"; the S best per image become one token each, so every block runs on ``N - 3S`` patch tokens.
As in the official implementation (tue-mps/cts-segmenter, ``segm/model/efficient.py``), a shared
token is the trunk's patch embedding of the superpatch's image region downsampled 2x (bilinear,
scale 0.5, which is the 2x2 mean) plus the superpatch's position (absolute embeddings: the 2x2 mean
of the 4 patches' embeddings, as the official bilinear downsampling of the embedding grid gives;
RoPE: the superpatch centre). The sequence is ``[prefix, kept patches (raster order), shared
superpatches (raster order)]``, the official order. Before ``to_map`` every shared token is copied
to its 4 patch positions, so whatever reads the maps sees full grids.

Trunk interface for sharing (DINOv2 and TimmViT implement it; a new trunk adds the same two
methods):

* ``pad(x, value=0.0)``: the image (or a label map, ``value=255``) as the trunk patchifies it, so
  the policy and its training labels see the trunk's superpatch grid.
* ``tokenize_shared(x, shared) -> (tokens, plan)``: like ``tokenize`` but with the superpatches
  ``shared`` (B, S) shared; ``plan`` (a :class:`SharePlan`) replaces ``grid`` in ``apply_block``.
  A RoPE trunk rotates each token by the angles of its position in ``plan.centres()`` (patch
  units; a kept patch (r, c) at (r + 0.5, c + 0.5), a superpatch at the centre of its 4 patches).
"""
import copy
import math
import os.path as osp
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..weights import read_state_dict

Grid = Tuple[int, int]


@dataclass
class SharePlan:
    """Which superpatches of each image share a token, and where every token sits.

    Args:
        grid: Full patch grid (h, w). Superpatches tile its top-left (h // 2, w // 2) * 2 part;
            an odd last row/column is never shared.
        shared: (B, S) flat superpatch indices in the (h // 2, w // 2) grid, ascending per row.
        num_prefix_tokens: cls/register tokens at the start of the sequence (never shared).
    """
    grid: Grid
    shared: torch.Tensor
    num_prefix_tokens: int

    def __post_init__(self):
        h, w = self.grid
        gh, gw = h // 2, w // 2
        B, S = self.shared.shape
        dev = self.shared.device
        si, sj = self.shared // gw, self.shared % gw
        # (B, S, 4): the 4 patch positions of each shared superpatch, raster order within it.
        quad = torch.stack([(2 * si) * w + 2 * sj, (2 * si) * w + 2 * sj + 1,
                            (2 * si + 1) * w + 2 * sj, (2 * si + 1) * w + 2 * sj + 1], dim=-1)
        keep = torch.ones(B, h * w, dtype=torch.bool, device=dev)
        keep.scatter_(1, quad.flatten(1), False)
        # Every row keeps the same count, so the row-major nonzero list reshapes to (B, K).
        self.kept = keep.nonzero()[:, 1].view(B, h * w - 4 * S)
        K = self.kept.shape[1]
        # Token (within the patch part of the shared sequence) that holds each grid position.
        index = torch.empty(B, h * w, dtype=torch.long, device=dev)
        index.scatter_(1, self.kept, torch.arange(K, device=dev).expand(B, K))
        shared_pos = torch.arange(K, K + S, device=dev).view(1, S, 1).expand(B, S, 4)
        index.scatter_(1, quad.flatten(1), shared_pos.flatten(1))
        self.unshare_index = index
        self.quad = quad

    @property
    def super_grid(self) -> Grid:
        return self.grid[0] // 2, self.grid[1] // 2

    @property
    def num_shared(self) -> int:
        return self.shared.shape[1]

    def gather(self, patch_tokens: torch.Tensor, super_tokens: torch.Tensor) -> torch.Tensor:
        """Shared patch sequence (B, N - 3S, D) from per-patch values (B or 1, h*w, D) and
        per-superpatch values (B or 1, gh*gw, D): kept patches, then shared superpatches."""
        B = self.kept.shape[0]
        kept = _take(patch_tokens, self.kept, B)
        return torch.cat((kept, _take(super_tokens, self.shared, B)), dim=1)

    def unshare(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P + N - 3S, D) -> (B, P + h*w, D): each shared token copied to its 4 positions."""
        p = self.num_prefix_tokens
        patches = _take(tokens[:, p:], self.unshare_index, tokens.shape[0])
        return torch.cat((tokens[:, :p], patches), dim=1)

    def centres(self) -> torch.Tensor:
        """(B, N - 3S, 2) float (row, col) centres of the patch tokens in patch units."""
        w = self.grid[1]
        kept = torch.stack((self.kept // w, self.kept % w), dim=-1).float() + 0.5
        gw = self.super_grid[1]
        shared = torch.stack((self.shared // gw, self.shared % gw), dim=-1).float() * 2 + 1
        return torch.cat((kept, shared), dim=1)


def _take(values: torch.Tensor, index: torch.Tensor, batch: int) -> torch.Tensor:
    values = values.expand(batch, -1, -1)
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


def unshared_map(trunk: nn.Module, tokens: torch.Tensor,
                 grid: Union[Grid, SharePlan]) -> torch.Tensor:
    """``trunk.to_map`` for plain or shared sequences (shared tokens copied to their 4 cells)."""
    if isinstance(grid, SharePlan):
        tokens, grid = grid.unshare(tokens), grid.grid
    return trunk.to_map(tokens, grid)


def num_shared_superpatches(reduction: float, grid: Grid) -> int:
    """Superpatches S that remove ``reduction`` of the h*w patch tokens (each removes 3), rounded
    up as the official 30 % setting (1024 tokens: 103 shared), at most all superpatches."""
    h, w = grid
    return min(math.ceil(reduction * h * w / 3 - 1e-9), (h // 2) * (w // 2))


def policy_input(x: torch.Tensor, super_grid: Grid, patch_size: int,
                 policy_stride: int = 32) -> torch.Tensor:
    """The superpatch-tiled region of a padded image, resized so that the policy's output grid is
    the superpatch grid: one policy cell per superpatch (28 px -> 32 px for patch 14)."""
    gh, gw = super_grid
    side = 2 * patch_size
    x = x[..., :gh * side, :gw * side]
    if side == policy_stride:
        return x
    return F.interpolate(x, size=(gh * policy_stride, gw * policy_stride), mode='bilinear',
                         align_corners=False)


def superpatch_labels(labels: torch.Tensor, super_grid: Grid, patch_size: int,
                      ignore_index: int = 255) -> torch.Tensor:
    """Policy targets (B, gh, gw) from label maps (B, H, W) padded as the trunk pads images.

    1 where the labelled pixels of a superpatch all share one class, 0 where they do not,
    ``ignore_index`` where it has no labelled pixel.
    """
    gh, gw = super_grid
    side = 2 * patch_size
    lab = labels[:, None, :gh * side, :gw * side].float()
    valid = lab != ignore_index
    big = float(ignore_index + 1)
    top = F.max_pool2d(torch.where(valid, lab, torch.full_like(lab, -1.0)), side)
    bottom = -F.max_pool2d(torch.where(valid, -lab, torch.full_like(lab, -big)), side)
    any_valid = F.max_pool2d(valid.float(), side) > 0
    target = (top == bottom).long()
    target[~any_valid] = ignore_index
    return target[:, 0]


@MODELS.register_module()
class CTSPolicyNet(BaseModule):
    """CTS policy network: EfficientNet-Lite0 features at stride 32, then a 1x1 conv to 2 classes
    (0: several classes, 1: one class). Parameter names match the official ``PolicyNet``
    (``backbone.*`` = timm's ``features_only`` model, ``head.*``), so its checkpoints load.

    Args:
        pretrained (str | None): Local file: a policy checkpoint (``backbone.*``/``head.*``, e.g.
            from ``tools/train_cts_policy.py``) or timm ImageNet ``efficientnet_lite0`` weights
            (backbone only; the head stays random). None: random weights. Never downloaded.
    """
    stride = 32

    def __init__(self, pretrained: Optional[str] = None, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        import timm
        self.pretrained = pretrained
        self.backbone = timm.create_model('efficientnet_lite0', pretrained=False,
                                          features_only=True, out_indices=(4, ))
        self.head = nn.Conv2d(self.backbone.feature_info.channels()[-1], 2, 1)

    @classmethod
    def find_weights(cls, cfg: dict) -> Optional[str]:
        """The local policy file of ``cfg`` (read once to check it; never downloaded), or None.
        The launchers' preflight calls it, as it calls the trunks'."""
        if not cfg.get('pretrained'):
            return None
        read_policy_weights(cfg['pretrained'])
        return cfg['pretrained']

    def init_weights(self):
        if self.pretrained is None:
            if self.init_cfg:
                return super().init_weights()
            # timm's constructor initialised it; BaseModule's pass would only log every
            # parameter to the console outside a runner (tools/train_cts_policy.py).
            return
        state_dict = read_policy_weights(self.pretrained)
        if not any(k.startswith('backbone.') for k in state_dict):
            state_dict = {'backbone.' + k: v for k, v in state_dict.items()}
            own = self.state_dict()
            state_dict = {k: v for k, v in state_dict.items() if k in own}  # drop the classifier
            missing, unexpected = self.load_state_dict(state_dict, strict=False)
            missing = [k for k in missing if not k.startswith('head.')]
        else:
            missing, unexpected = self.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise RuntimeError(
                f'CTS policy weights {self.pretrained!r} do not fit EfficientNet-Lite0 + a 2-class '
                f'head: missing {missing[:6]}, unexpected {unexpected[:6]}. Use a file written by '
                'tools/train_cts_policy.py, an official CTS PolicyNet model.pth, or timm '
                'efficientnet_lite0 weights.')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2, H / 32, W / 32)."""
        return self.head(self.backbone(x)[-1])


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold each BatchNorm (timm's BatchNormAct2d: BN -> drop -> act) into the conv registered
    just before it in the same parent, which is the order timm's EfficientNet blocks run them in
    (a test checks the folded policy against the original). In place; eval-mode semantics."""
    for parent in list(module.modules()):
        conv_name = None
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                conv_name = name
            elif isinstance(child, nn.BatchNorm2d) and conv_name is not None:
                setattr(parent, conv_name, fuse_conv_bn_eval(getattr(parent, conv_name), child))
                rest = [m for m in (getattr(child, 'drop', None), getattr(child, 'act', None))
                        if m is not None]
                setattr(parent, name, nn.Sequential(*rest))
                conv_name = None
    return module


def read_policy_weights(path: str) -> dict:
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'CTS policy checkpoint {path!r} does not exist. Train one on the config\'s dataset '
            'with `python tools/train_cts_policy.py CONFIG --out ' + path + '` (or copy an '
            'official CTS PolicyNet model.pth there), or set '
            'model.backbone.token_sharing.policy.pretrained to its path. Nothing is downloaded.')
    return read_state_dict(path)


@MODELS.register_module()
class TokenSharing(BaseModule):
    """Picks the superpatches to share with a frozen policy and tokenizes through the trunk.

    Args:
        policy (dict): Policy network config, e.g. ``dict(type='CTSPolicyNet', pretrained=...)``.
        reduction (float): Fraction of patch tokens removed, in [0, 0.75); each shared superpatch
            removes 3. 0 disables sharing (the plain path, policy not run). Default 0.3.
    """

    def __init__(self, policy: dict, reduction: float = 0.3, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if not 0 <= reduction < 0.75:
            raise ValueError(f'TokenSharing: reduction must be in [0, 0.75) (a fraction of the '
                             f'tokens; 0 disables), got {reduction}')
        self.reduction = reduction
        self.policy = MODELS.build(policy)
        self.requires_grad_(False)
        self.eval()
        # Inference copy of the frozen policy (a tuple, so not a submodule: no state_dict keys).
        self._fast_policy = None
        # On the policy itself: fires whether its weights are loaded through it or a parent.
        self.policy.register_load_state_dict_post_hook(lambda *_: self._drop_fast_policy())

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: BN statistics of the policy stay as trained

    def _drop_fast_policy(self):
        self._fast_policy = None

    def _apply(self, fn, *args, **kwargs):
        self._drop_fast_policy()  # .to(), .cuda(), .half(): rebuilt from the new weights
        return super()._apply(fn, *args, **kwargs)

    def run_policy(self, x: torch.Tensor) -> torch.Tensor:
        """The policy's logits through a copy with BatchNorm folded into the convs and
        channels-last tensors: the same function in 0.38x the CPU time (measured: batch 2,
        576 px, one thread)."""
        if self._fast_policy is None:
            fast = fold_batchnorm(copy.deepcopy(self.policy).eval())
            self._fast_policy = (fast.to(memory_format=torch.channels_last), )
        return self._fast_policy[0](x.contiguous(memory_format=torch.channels_last))

    def select(self, x: torch.Tensor, grid: Grid, patch_size: int, num: int) -> torch.Tensor:
        """(B, num) superpatch indices with the highest one-class probability, ascending."""
        super_grid = (grid[0] // 2, grid[1] // 2)
        logits = self.run_policy(policy_input(x, super_grid, patch_size, self.policy.stride))
        assert logits.shape[-2:] == super_grid, (logits.shape, super_grid)
        scores = logits.float().softmax(dim=1)[:, 1].flatten(1)
        return scores.topk(num, dim=1).indices.sort(dim=1).values

    def forward(self, trunk: nn.Module,
                x: torch.Tensor) -> Tuple[torch.Tensor, Union[Grid, SharePlan]]:
        """``trunk.tokenize(x)`` with the top superpatches shared: (tokens, plan or grid)."""
        if self.reduction == 0:
            return trunk.tokenize(x)
        x = trunk.pad(x)
        grid = (x.shape[-2] // trunk.patch_size, x.shape[-1] // trunk.patch_size)
        num = num_shared_superpatches(self.reduction, grid)
        if num == 0:
            return trunk.tokenize(x)
        return trunk.tokenize_shared(x, self.select(x, grid, trunk.patch_size, num))
