"""The trunk interface: what ViT-Split, the plain baselines and other methods need of a ViT.

A trunk is a registered module (``DINOv2``, ``TimmViT``) subclassing :class:`Trunk`. Methods are
built on these members only, never on one trunk's internals (pos_embed, cls_token, rope, ...):

* ``tokenize(x) -> (tokens, grid)``: image (B, 3, H, W), any H and W, to the token sequence
  (B, N, D), prefix tokens (cls, registers/storage) first, and the patch grid ``(h, w)``. Padding
  (centred, to a multiple of ``patch_size``) and position encoding are the trunk's business.
* ``blocks`` (nn.ModuleList) and ``apply_block(block, tokens, grid, num_extra=0)``: run one block,
  the trunk's own or a trainable copy of it (RoPE trunks pass the rotary table of ``grid`` here).
  ``num_extra`` tokens right after the prefix tokens (prompts, queries) have no position: a RoPE
  trunk leaves them unrotated, as it leaves the prefix tokens.
* ``to_map(tokens, grid) -> (B, D, h, w)``: the trunk's final norm, prefix tokens dropped,
  reshaped.
* ``forward(x, out_indices) -> list of (B, D, h, w)``: the normed maps after each block in
  ``out_indices`` (0-based, in the order asked, repeats allowed).
* ``embed_dims``, ``num_layers``, ``patch_size``, ``num_prefix_tokens``.
* Linear layers inside the blocks run through their module's forward (never ``F.linear`` on
  ``layer.weight``), so that module wrappers such as LoRA's take effect.
* Weights: ``pretrained`` (a path or a name; None: random) is read in ``init_weights()``, never while building;
  the class method ``find_weights(cfg)`` returns the local file a trunk config will read, or raises
  one error saying which file is missing, where it comes from and where to put it (preflight and
  the tools call it before any work).
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch.profiler import record_function


def centre_pad(x: torch.Tensor, multiple: int, value: float = 0.0) -> torch.Tensor:
    """Pad H and W with ``value`` up to multiples of ``multiple``; top/left get ``pad // 2``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=value)


class UnsupportedCombination(ValueError):
    """A method that cannot run on a trunk, refused when the model is built; the message names
    the method, the trunk, the reason and what to use instead."""


def check_indices(indices: Sequence[int], num_layers: int, name: str):
    bad = [i for i in indices if not 0 <= i < num_layers]
    if not indices or bad:
        raise ValueError(f'{name} must be non-empty block indices in [0, {num_layers}); got '
                         f'{list(indices)}')


class Trunk(BaseModule):
    """Base class of the trunks; subclasses set the attributes and implement the methods below."""

    embed_dims: int
    num_layers: int
    patch_size: int
    num_prefix_tokens: int
    blocks: nn.ModuleList
    pretrained: Optional[str] = None

    @classmethod
    def find_weights(cls, cfg: dict) -> Optional[str]:
        """Local path of the weights the trunk config ``cfg`` will load (None: random weights)."""
        raise NotImplementedError

    def tokenize(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        raise NotImplementedError

    def apply_block(self, block: nn.Module, tokens: torch.Tensor, grid: Tuple[int, int],
                    num_extra: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def to_map(self, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, out_indices: Sequence[int]) -> List[torch.Tensor]:
        """Normed maps (B, D, h, w) after each block in ``out_indices`` (repeats allowed)."""
        tokens, grid = self.tokenize(x)
        wanted = set(out_indices)
        feats = {}
        for i, blk in enumerate(self.blocks[:max(out_indices) + 1]):
            tokens = self.apply_block(blk, tokens, grid)
            if i in wanted:
                feats[i] = self.to_map(tokens, grid)
        return [feats[i] for i in out_indices]


@MODELS.register_module()
class PlainBackbone(BaseModule):
    """A trunk alone, for baselines: frozen (linear probe) or fully fine-tuned.

    Registered also as ``DINOv2Backbone`` (its former name), so older configs still build.

    Args:
        trunk (dict): Config of any trunk, e.g. ``dict(type='DINOv2', arch='small', ...)`` or
            ``dict(type='TimmViT', name='vit_small_patch16_dinov3', ...)``.
        out_indices (Sequence[int]): Blocks whose normed outputs are returned (0-based).
        frozen (bool): Freeze the trunk (no gradients, eval mode, no autograd graph). Default False.
    """

    def __init__(self, trunk: dict, out_indices: Sequence[int] = (11, ), frozen: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.trunk = MODELS.build(trunk)
        self.out_indices = list(out_indices)
        check_indices(self.out_indices, self.trunk.num_layers, 'out_indices')
        self.frozen = frozen
        if frozen:
            self.trunk.requires_grad_(False)
            self.trunk.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.trunk.eval()
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen), \
                record_function('vitsplit.trunk'):
            return tuple(self.trunk(x, self.out_indices))


DINOv2Backbone = PlainBackbone
MODELS.register_module(name='DINOv2Backbone', module=DINOv2Backbone)
