"""ViT-Split (Li et al., ICCV 2025): a frozen VFM trunk, a tunable task head and a prior head.

See SPEC section 2. The trunk is any module with the interface described in ``trunk.py``.
"""
import copy
import re
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch.profiler import record_function

from ..utils.deform_conv import DeformConv2d
from .dinov2 import check_indices
from .token_sharing import unshared_map


class DeformFusion(nn.Module):
    """Conv1x1 -> GELU -> 3x3 deformable conv -> GELU (the prior head and the fusion block).

    The deformable conv (no bias, padding 1) takes its offsets from a 3x3 conv of its input; the
    offset layout is mmcv's, which is torchvision's (see ``models/utils/deform_conv.py``).

    Args:
        in_channels (int): Input channels.
        channels (int): Output channels.
    """

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, channels, 1)
        self.act = nn.GELU()
        self.offsets = nn.Conv2d(channels, 18, 3, padding=1)
        self.deform_conv = DeformConv2d(channels, channels, 3, padding=1)

    def init_weights(self):
        # Zero offsets: the deformable conv starts as a plain 3x3 conv.
        nn.init.zeros_(self.offsets.weight)
        nn.init.zeros_(self.offsets.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.proj(x))
        return self.act(self.deform_conv(x, self.offsets(x)))


# Original implementation's checkpoint keys (SPEC section 5) -> ours, relative to the backbone.
ORIGINAL_KEYS = [
    (r'^backbone\.', 'trunk.'),
    (r'^split_head\.', 'task_head.'),
    (r'^(frozen_conv|fusion_conv|fusion_net)\.0\.', r'\1.proj.'),
    (r'^(frozen_conv|fusion_conv|fusion_net)\.2\.', r'\1.'),
    (r'^frozen_conv\.', 'prior_head.'),
    (r'^(fusion_conv|fusion_net)\.', 'fusion.'),
    (r'^learnable_gate\.', 'gate.'),
]


def convert_original_keys(state_dict: dict, prefix: str) -> List[str]:
    """Rename, in place, keys of the original ViT-Split layout under ``prefix``.

    Returns the dropped keys (the original's unused ``bn_norm``).
    """
    dropped = []
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rel = key[len(prefix):]
        if rel.startswith('bn_norm.'):
            dropped.append(key)
            del state_dict[key]
            continue
        new = rel
        for pattern, repl in ORIGINAL_KEYS:
            new = re.sub(pattern, repl, new)
        if new != rel:
            state_dict[prefix + new] = state_dict.pop(key)
    return dropped


@MODELS.register_module()
class ViTSplit(BaseModule):
    """ViT-Split backbone: frozen trunk + task head + prior head + fusion (SPEC section 2).

    Args:
        trunk (dict): Trunk config, e.g. ``dict(type='DINOv2', arch='small', pretrained='small')``.
        out_indices (Sequence[int] | None): Trunk blocks (0-based, repeats allowed) whose normed
            outputs are concatenated as the prior head's input. None: all blocks.
        select_layers (Sequence[int]): Contiguous ascending trunk blocks (first >= 1) copied as the
            trainable task head, initialised from the trunk's weights.
        channels (int | None): Output channels C. Default: the trunk's dim.
        token_sharing (dict | None): Content-aware token sharing in the trunk and task head, e.g.
            ``dict(type='TokenSharing', reduction=0.3, policy=dict(type='CTSPolicyNet',
            pretrained=PATH))`` (see ``token_sharing.py``). None: no sharing.
    """

    def __init__(self, trunk: dict, out_indices: Optional[Sequence[int]],
                 select_layers: Sequence[int], channels: Optional[int] = None,
                 init_cfg: Optional[dict] = None, token_sharing: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.trunk = MODELS.build(trunk)
        self.trunk.requires_grad_(False)
        self.trunk.eval()
        dim, depth = self.trunk.embed_dims, self.trunk.num_layers
        self.channels = channels = channels or dim
        self.out_indices = list(range(depth) if out_indices is None else out_indices)
        self.select_layers = list(select_layers)
        check_indices(self.out_indices, depth, 'out_indices')
        check_indices(self.select_layers, depth, 'select_layers')
        if self.select_layers[0] < 1 or self.select_layers != list(
                range(self.select_layers[0], self.select_layers[0] + len(self.select_layers))):
            raise ValueError('select_layers must be contiguous ascending block indices starting at '
                             f'>= 1 (the task head reads the tokens after block first-1); got '
                             f'{self.select_layers}')
        self.task_head = nn.ModuleList(
            copy.deepcopy(self.trunk.blocks[i]).requires_grad_(True) for i in self.select_layers)
        self.prior_head = DeformFusion(self.num_frozen_features * dim, channels)
        self.fusion = DeformFusion(channels + dim, channels)
        self.token_sharing = MODELS.build(token_sharing) if token_sharing else None
        self.register_load_state_dict_pre_hook(self._convert_original_checkpoint)

    @property
    def num_frozen_features(self) -> int:
        return len(self.out_indices)

    @staticmethod
    def _convert_original_checkpoint(module, state_dict, prefix, *args):
        convert_original_keys(state_dict, prefix)

    def init_weights(self):
        # Children first: the trunk loads its pretrained weights, the heads zero their offsets.
        super().init_weights()
        for i, blk in zip(self.select_layers, self.task_head):
            blk.load_state_dict(self.trunk.blocks[i].state_dict())

    def train(self, mode: bool = True):
        super().train(mode)
        self.trunk.eval()  # frozen: no dropout/drop-path, whatever the runner asks
        if self.token_sharing is not None:
            self.token_sharing.eval()
        return self

    @torch.no_grad()
    def frozen_features(self, x: torch.Tensor) -> Tuple[dict, torch.Tensor, tuple]:
        """Run the trunk once, without autograd: the normed maps of ``out_indices`` by block, and
        the tokens the task head starts from."""
        tokens, grid = (self.trunk.tokenize(x) if self.token_sharing is None
                        else self.token_sharing(self.trunk, x))
        start = self.select_layers[0]
        wanted = set(self.out_indices)
        feats, head_input = {}, None
        for i in range(max(max(self.out_indices), start - 1) + 1):
            tokens = self.trunk.apply_block(self.trunk.blocks[i], tokens, grid)
            if i in wanted:
                feats[i] = unshared_map(self.trunk, tokens, grid)
            if i == start - 1:
                head_input = tokens
        return feats, head_input, grid

    def combine_frozen(self, feats: dict) -> torch.Tensor:
        return torch.cat([feats[i] for i in self.out_indices], dim=1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        # Named ranges let tools/benchmark.py show where the time goes (no cost otherwise).
        with record_function('vitsplit.trunk'):
            feats, tokens, grid = self.frozen_features(x)
        with record_function('vitsplit.task_head'):
            for blk in self.task_head:
                tokens = self.trunk.apply_block(blk, tokens, grid)
            task = unshared_map(self.trunk, tokens, grid)
        with record_function('vitsplit.prior_fusion'):
            with record_function('vitsplit.prior_head'):
                prior = self.prior_head(self.combine_frozen(feats))
            with record_function('vitsplit.fusion'):
                return (self.fusion(torch.cat([prior, task], dim=1)), )


class LearnableGate(nn.Module):
    """Top-k gate over trunk blocks with a straight-through gradient (original's learnable gate).

    Args:
        num_layers (int): Trunk blocks L to choose from.
        num_outputs (int): Mixed features k (also the number of blocks each one keeps).
        temperature (float): Softmax temperature over blocks.
    """

    def __init__(self, num_layers: int, num_outputs: int = 4, temperature: float = 0.5):
        super().__init__()
        self.num_outputs = num_outputs
        self.temperature = temperature
        self.scores = nn.Parameter(torch.rand(num_layers, num_outputs))

    def init_weights(self):
        nn.init.uniform_(self.scores, 0, 1)

    def forward(self) -> torch.Tensor:
        """(L, k) mixing weights; each column sums to 1."""
        s = torch.softmax(self.scores / self.temperature, dim=0)
        top = s.topk(self.num_outputs, dim=0).indices
        kept = torch.zeros_like(s).scatter(0, top, s.gather(0, top))
        gates = kept - self.scores.detach() + self.scores
        return gates / gates.sum(dim=0, keepdim=True)


@MODELS.register_module()
class ViTSplitGate(ViTSplit):
    """ViT-Split with a learnable top-k gate over all trunk blocks as the frozen features.

    Args:
        num_gated (int): Mixed features k fed to the prior head. Default 4.
        temperature (float): Gate softmax temperature. Default 0.5.
        Others as :class:`ViTSplit`; ``out_indices`` defaults to all trunk blocks.
    """

    def __init__(self, trunk: dict, select_layers: Sequence[int],
                 out_indices: Optional[Sequence[int]] = None, num_gated: int = 4,
                 temperature: float = 0.5, channels: Optional[int] = None,
                 init_cfg: Optional[dict] = None, token_sharing: Optional[dict] = None):
        self.num_gated = num_gated
        super().__init__(trunk, out_indices, select_layers, channels, init_cfg, token_sharing)
        self.gate = LearnableGate(len(self.out_indices), num_gated, temperature)

    @property
    def num_frozen_features(self) -> int:
        return self.num_gated

    def combine_frozen(self, feats: dict) -> torch.Tensor:
        stacked = torch.stack([feats[i] for i in self.out_indices], dim=1)  # (B, L, D, h, w)
        mixed = torch.einsum('bldhw,lk->bkdhw', stacked, self.gate())
        return mixed.flatten(1, 2)
