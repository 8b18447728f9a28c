"""The token side of EoMT: where the blocks that carry the queries come from.

An encoder gives the EoMT segmentor (``segmentor.py``):

* ``stem(x) -> (tokens, grid, prior)``: the tokens that enter ``blocks[0]`` ([prefix, patches]),
  the patch grid, and features added to the upscaled patch features (None for plain EoMT);
* ``blocks``: the blocks the segmentor runs; queries join before the last ``num_blocks``;
* ``run_block(block, tokens, grid, num_queries, attn_mask)``: one block on [prefix, queries,
  patches], the queries without position (no RoPE), masked attention if ``attn_mask``;
* ``norm(tokens, grid, num_queries) -> (queries (B, Q, D), patches (B, D, h, w))``: the trunk's
  final norm.

All of it goes through the trunk interface (``backbones/trunk.py``).
"""
import copy
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from ..backbones.trunk import UnsupportedCombination, check_indices
from ..backbones.vit_split import DeformFusion


class _MaskedCall:
    """A block called with ``attn_mask`` added, so the trunk's ``apply_block`` (which passes the
    rotary table, if any) runs it with masked attention. timm's blocks take ``attn_mask``."""

    def __init__(self, block: nn.Module, attn_mask: torch.Tensor):
        self.block, self.attn_mask = block, attn_mask

    def __call__(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        try:
            return self.block(x, attn_mask=self.attn_mask, **kwargs)
        except TypeError as e:
            if 'attn_mask' not in str(e):
                raise
            raise TypeError(
                f'EoMT: the trunk block {type(self.block).__name__} takes no attention mask; '
                'masked attention needs a trunk whose blocks take attn_mask (TimmViT, DINOv2), '
                'or masked_attn=False') from e


def refuse_token_sharing(encoder: str, token_sharing: Optional[dict]) -> None:
    """Token sharing (CTS, ``token_sharing=...``) on an EoMT encoder: one error naming the encoder
    and what works instead. EoMT's queries attend (with masks) to, and read their masks from, the
    full patch grid inside the encoder's blocks; shared superpatch tokens replace that grid by a
    shorter, image-dependent sequence, which neither the masked attention nor the mask head
    takes."""
    if token_sharing:
        raise UnsupportedCombination(
            f'{encoder} (EoMT) does not support token sharing (token_sharing='
            f'{dict(token_sharing).get("type", token_sharing)}): EoMT\'s queries attend to and '
            'read their masks from the full patch grid inside the encoder\'s blocks, which shared '
            'superpatch tokens replace by fewer tokens. Remove token_sharing from the EoMT '
            'backbone, or use token sharing on ViTSplit / ViTSplitGate (e.g. '
            'configs/ade20k/vitsplit_cts/).')


@MODELS.register_module()
class EoMTEncoder(BaseModule):
    """A trunk fine-tuned whole, as the official EoMT: its own blocks carry the queries.

    Args:
        trunk (dict): Trunk config, e.g. ``dict(type='TimmViT',
            name='vit_large_patch14_reg4_dinov2', model_kwargs=dict(img_size=512,
            patch_size=16), pretrained='timm')``.
        token_sharing: Not supported (refused with one error): the EoMT encoders take no
            token sharing (see :func:`refuse_token_sharing`).
    """

    def __init__(self, trunk: dict, init_cfg: Optional[dict] = None,
                 token_sharing: Optional[dict] = None):
        refuse_token_sharing(type(self).__name__, token_sharing)
        super().__init__(init_cfg=init_cfg)
        self.trunk = MODELS.build(trunk)

    @property
    def embed_dims(self) -> int:
        return self.trunk.embed_dims

    @property
    def patch_size(self) -> int:
        return self.trunk.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return self.trunk.num_prefix_tokens

    @property
    def blocks(self) -> nn.ModuleList:
        return self.trunk.blocks

    def stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int], None]:
        tokens, grid = self.trunk.tokenize(x)
        return tokens, grid, None

    def run_block(self, block: nn.Module, tokens: torch.Tensor, grid: Tuple[int, int],
                  num_queries: int = 0, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if attn_mask is not None:
            block = _MaskedCall(block, attn_mask)
        if num_queries:
            return self.trunk.apply_block(block, tokens, grid, num_extra=num_queries)
        return self.trunk.apply_block(block, tokens, grid)

    def norm(self, tokens: torch.Tensor, grid: Tuple[int, int],
             num_queries: int) -> Tuple[torch.Tensor, torch.Tensor]:
        # The final norm is per token: one 1 x (Q + h*w) map holds queries and patches.
        h, w = grid
        x = self.trunk.to_map(tokens, (1, num_queries + h * w))[:, :, 0]
        return x[..., :num_queries].transpose(1, 2), x[..., num_queries:].unflatten(-1, (h, w))


@MODELS.register_module()
class ViTSplitEoMTEncoder(EoMTEncoder):
    """ViT-Split whose task head carries EoMT's queries (issue 28).

    The trunk is frozen and runs once without autograd. The task head, trainable copies of the
    trunk blocks ``select_layers`` (initialised from the trunk, as ViT-Split's), starts from the
    trunk's tokens after block ``select_layers[0] - 1``; the queries join before its last
    ``num_blocks`` blocks (the head's setting) with masked attention, as in EoMT.

    The prior head (ViT-Split's: 1x1 conv -> GELU -> deformable 3x3 conv -> GELU on the
    concatenated normed maps of ``out_indices``) then a zero-initialised 1x1 conv gives a D-wide
    map that is added to the upscaled patch features the masks are read from (bilinearly resized
    to their grid). Added, not concatenated: the masks are dot products of the query embeddings
    with these features, so the frozen multi-level detail has to live in the same D channels;
    zero-initialised, so training starts exactly as EoMT on the copied blocks.
    ``out_indices=[]``: no prior head, i.e. the frozen-trunk EoMT baseline that PMT describes
    (queries in a trainable copy of the last blocks on frozen tokens).

    Args:
        trunk (dict): Trunk config.
        select_layers (Sequence[int]): Contiguous ascending trunk blocks (first >= 1) copied as
            the task head.
        out_indices (Sequence[int] | None): Trunk blocks whose normed maps feed the prior head;
            None: all; []: no prior head.
        token_sharing: Not supported, refused (as :class:`EoMTEncoder`).
    """

    def __init__(self, trunk: dict, select_layers: Sequence[int],
                 out_indices: Optional[Sequence[int]] = None, init_cfg: Optional[dict] = None,
                 token_sharing: Optional[dict] = None):
        super().__init__(trunk, init_cfg=init_cfg, token_sharing=token_sharing)
        self.trunk.requires_grad_(False)
        self.trunk.eval()
        dim, depth = self.trunk.embed_dims, self.trunk.num_layers
        self.select_layers = list(select_layers)
        check_indices(self.select_layers, depth, 'select_layers')
        first = self.select_layers[0]
        if first < 1 or self.select_layers != list(range(first, first + len(select_layers))):
            raise ValueError('select_layers must be contiguous ascending block indices starting '
                             f'at >= 1; got {self.select_layers}')
        self.out_indices = list(range(depth) if out_indices is None else out_indices)
        if self.out_indices:
            check_indices(self.out_indices, depth, 'out_indices')
            self.prior_head = DeformFusion(len(self.out_indices) * dim, dim)
            self.prior_proj = nn.Conv2d(dim, dim, 1)
        self.task_head = nn.ModuleList(
            copy.deepcopy(self.trunk.blocks[i]).requires_grad_(True) for i in self.select_layers)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.task_head

    def init_weights(self):
        super().init_weights()  # the trunk loads its weights, the prior head zeroes its offsets
        for i, blk in zip(self.select_layers, self.task_head):
            blk.load_state_dict(self.trunk.blocks[i].state_dict())
        if self.out_indices:
            nn.init.zeros_(self.prior_proj.weight)
            nn.init.zeros_(self.prior_proj.bias)

    def train(self, mode: bool = True):
        super().train(mode)
        self.trunk.eval()  # frozen: no dropout or drop-path
        return self

    @torch.no_grad()
    def _frozen(self, x: torch.Tensor):
        tokens, grid = self.trunk.tokenize(x)
        start = self.select_layers[0]
        wanted = set(self.out_indices)
        feats, head_input = {}, None
        for i in range(max(self.out_indices + [start - 1]) + 1):
            tokens = self.trunk.apply_block(self.trunk.blocks[i], tokens, grid)
            if i in wanted:
                feats[i] = self.trunk.to_map(tokens, grid)
            if i == start - 1:
                head_input = tokens
        return feats, head_input, grid

    def stem(self, x: torch.Tensor):
        feats, tokens, grid = self._frozen(x)
        prior = None
        if self.out_indices:
            maps = torch.cat([feats[i] for i in self.out_indices], dim=1)
            prior = self.prior_proj(self.prior_head(maps))
        return tokens, grid, prior
