"""The base of the methods that tune a frozen trunk with small parts inside or between its blocks
(Rein, LoRA, VPT, AdaptFormer): one constructor, one block loop, one ``train()``, one way to load
checkpoints that hold the method's weights but not the trunk's."""
import inspect
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch.profiler import record_function

from ...engine.checkpoint import CheckpointError
from .trunk import UnsupportedCombination, check_indices


class AdapterBackbone(BaseModule):
    """A frozen trunk whose blocks run through :meth:`run_block`; returns the un-normed patch
    tokens after each block in ``out_indices`` (B, D, h, w), in the order asked, each resized by
    its ``feat_scales`` entry (bilinear), as Rein's backbones return them.

    Subclasses build their trainable parts in ``__init__`` (after this one) and implement
    :meth:`run_block`; :meth:`is_method_param` names their parameters (also those living inside
    the trunk, such as LoRA's), which are the only ones that train in the backbone.

    A checkpoint that holds the method's weights and head but no trunk weights (as Rein's
    official releases) loads the trunk from its own ``pretrained`` file; with no such file it is
    refused (the trunk would be random).

    Args:
        trunk (dict): Trunk config (the interface of ``trunk.py``).
        out_indices (Sequence[int]): Blocks whose outputs are returned (0-based), in this order.
        feat_scales (Sequence[float] | None): Resize factor of each output, paired with
            ``out_indices`` by position (official Rein: 4, 2, 1, 0.5). None: no resizing.
    """

    method = 'adapter'  # the method's name in messages

    def __init__(self, trunk: dict, out_indices: Sequence[int],
                 feat_scales: Optional[Sequence[float]] = None, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.trunk = MODELS.build(trunk)
        self.trunk.requires_grad_(False)
        self.trunk.eval()
        self.out_indices = list(out_indices)
        check_indices(self.out_indices, self.trunk.num_layers, 'out_indices')
        if feat_scales is not None and len(feat_scales) != len(self.out_indices):
            raise ValueError(f'{type(self).__name__}: feat_scales {list(feat_scales)} must give '
                             f'one factor per entry of out_indices {self.out_indices}')
        self.feat_scales = None if feat_scales is None else list(feat_scales)
        self.register_load_state_dict_pre_hook(self._load_hook)

    def trunk_sizes(self, cfg: dict) -> dict:
        """``cfg`` (a part's config) with the trunk's ``num_layers``, ``embed_dims`` and
        ``patch_size`` filled in where its registered class takes them; a given value that
        contradicts the trunk is refused."""
        cfg = dict(cfg)
        accepted = inspect.signature(MODELS.get(cfg['type'])).parameters
        takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in accepted.values())
        for key in ('num_layers', 'embed_dims', 'patch_size'):
            if key not in accepted and not takes_kwargs:
                continue
            value = getattr(self.trunk, key)
            if cfg.setdefault(key, value) != value:
                raise ValueError(
                    f'{type(self).__name__}: {cfg["type"]} {key}={cfg[key]} contradicts the '
                    f'trunk ({self.trunk_name()}: {value}). Leave {key} out of the config (it '
                    "defaults to the trunk's) or pick the trunk it was meant for.")
        return cfg

    def trunk_name(self) -> str:
        return getattr(self.trunk, 'name', type(self.trunk).__name__)

    def refuse(self, reason: str, fix: str):
        """Raise the build-time refusal of this method on this trunk."""
        raise UnsupportedCombination(f'{self.method} on {self.trunk_name()}: {reason}. {fix}')

    def is_method_param(self, name: str) -> bool:
        """Whether the backbone parameter ``name`` belongs to the method (and so trains)."""
        raise NotImplementedError

    def freeze_all_but_method(self):
        for name, p in self.named_parameters():
            p.requires_grad = self.is_method_param(name)

    def run_block(self, i: int, block: nn.Module, tokens: torch.Tensor, grid) -> torch.Tensor:
        """Run trunk block ``i`` on ``tokens`` with the method's parts."""
        raise NotImplementedError

    def train(self, mode: bool = True):
        super().train(mode)
        self.trunk.eval()  # frozen: no dropout/drop-path, as the official train() of Rein
        return self

    def forward(self, x: torch.Tensor):
        # The method runs between the trunk's blocks: profiled (tools/benchmark.py) as one region.
        with record_function('vitsplit.trunk'):
            return self.outputs(self.features(x))

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        tokens, grid = self.trunk.tokenize(x)
        n = self.trunk.num_prefix_tokens
        wanted = set(self.out_indices)
        maps = {}
        for i, blk in enumerate(self.trunk.blocks[:max(self.out_indices) + 1]):
            tokens = self.run_block(i, blk, tokens, grid)
            if i in wanted:
                maps[i] = patch_map(tokens, n, grid)
        return rescale([maps[i] for i in self.out_indices], self.feat_scales)

    def outputs(self, feats: List[torch.Tensor]):
        return tuple(feats)

    def load_trunk_pretrained(self):
        """The trunk's own ``init_weights()`` (its pretrained file, or its random init)."""
        self.trunk.init_weights()

    def convert_checkpoint(self, state_dict: dict, prefix: str):
        """Convert another layout's keys in place (e.g. an official release's), at load time."""

    def _load_hook(self, module, state_dict, prefix, *args):
        if not any(k.startswith(prefix) for k in state_dict):
            return  # a load that is not ours (e.g. a sibling's)
        self.convert_checkpoint(state_dict, prefix)
        own = [k for k in state_dict if k.startswith(prefix)]
        trunk = prefix + 'trunk.'
        if any(k.startswith(trunk) and not self.is_method_param(k[len(prefix):])
               for k in own):
            return
        if getattr(self.trunk, 'pretrained', None) is None:
            raise TrunklessCheckpointError(
                f'The checkpoint holds {self.method} and head weights but no trunk weights, and '
                f'the config\'s trunk ({self.trunk_name()}) has pretrained=None: the trunk would '
                'be random. Set model.backbone.trunk.pretrained to the weights the method was '
                'trained on (e.g. --cfg-options model.backbone.trunk.pretrained=PATH).')
        print_log(f'The checkpoint holds no trunk weights (a {self.method} + head release): the '
                  f'trunk loads its pretrained weights {self.trunk.pretrained!r}.',
                  logger='current')
        self.load_trunk_pretrained()
        for k, v in self.trunk.state_dict().items():
            if not self.is_method_param('trunk.' + k):  # the method's own must come from the file
                state_dict.setdefault(trunk + k, v)


class TrunklessCheckpointError(CheckpointError):
    """A checkpoint without trunk weights for a trunk without a pretrained file."""


def patch_map(tokens: torch.Tensor, num_prefix_tokens: int, grid: Tuple[int, int]) -> torch.Tensor:
    """Un-normed patch tokens (B, N, D) as a map (B, D, h, w), as Rein's backbones return them."""
    patches = tokens[:, num_prefix_tokens:]
    return patches.transpose(1, 2).reshape(patches.shape[0], -1, *grid)


def rescale(feats: List[torch.Tensor], scales: Optional[Sequence[float]]) -> List[torch.Tensor]:
    """Resize each map by its factor (bilinear), as the official DINOv2 backbone of Rein."""
    if scales is None:
        return feats
    # scale_factor (not size), as the official code: the sampling grid depends on it.
    return [f if s == 1 else F.interpolate(f, scale_factor=s, mode='bilinear',
                                           align_corners=False)
            for f, s in zip(feats, scales)]
