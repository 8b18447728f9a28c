"""Rein (Wei et al., "Stronger, Fewer, & Superior", CVPR 2024) on any trunk of the trunk interface.

A frozen trunk; after each of its blocks a small set of learnable tokens refines the patch
tokens (``Reins``; ``LoRAReins`` factorises the tokens as A @ B), and the same tokens, through
``transform`` and ``merge``, become the Mask2Former queries (``ReinMask2FormerHead``). Numbers
and parameter names follow the official implementation (github w1oves/Rein,
``rein/models/backbones/reins.py`` and ``reins_dinov2.py``); official checkpoints load as they are
(``ReinBackbone`` converts their keys at load time).
"""
import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from .adapter_base import AdapterBackbone


@MODELS.register_module()
class Reins(BaseModule):
    """Learnable tokens that refine the patch tokens after each trunk block.

    For block ``i`` with tokens T_i (token_length x D) and patch features f (N x D)::

        attn  = softmax(f T_i^T / sqrt(D))              (over all token_length tokens)
        delta = mlp_delta_f(attn[:, 1:] mlp_token2feat(T_i[1:]) + f)
        f     = f + scale * delta

    Token 0 takes part in the softmax but adds nothing (as in the official code). With
    ``link_token_to_query``, :meth:`link_queries` turns the tokens of all layers into
    ``token_length`` queries: ``transform`` per layer, then max, mean and last over the layers,
    interleaved per channel, through ``merge``.

    Args:
        num_layers (int): Trunk blocks (one token set each).
        embed_dims (int): Trunk width D.
        patch_size (int): Trunk patch size (only for the token initialisation range).
        query_dims (int): Width of the linked queries (Mask2Former's ``feat_channels``).
            Default 256.
        token_length (int): Tokens per layer. Default 100.
        use_softmax (bool): Softmax over the tokens (scaled by D^-0.5). Default True.
        link_token_to_query (bool): Build ``transform``/``merge`` and return queries. Default True.
        scale_init (float): Initial learnable ``scale``. Default 1e-3.
        zero_mlp_delta_f (bool): Start ``mlp_delta_f`` at zero with a fixed scale of 1.
    """

    def __init__(self,
                 num_layers: int,
                 embed_dims: int,
                 patch_size: int,
                 query_dims: int = 256,
                 token_length: int = 100,
                 use_softmax: bool = True,
                 link_token_to_query: bool = True,
                 scale_init: float = 1e-3,
                 zero_mlp_delta_f: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.num_layers = num_layers
        self.embed_dims = embed_dims
        self.patch_size = patch_size
        self.query_dims = query_dims
        self.token_length = token_length
        self.use_softmax = use_softmax
        self.link_token_to_query = link_token_to_query
        self.scale_init = scale_init
        self.zero_mlp_delta_f = zero_mlp_delta_f
        self._make_tokens()
        if zero_mlp_delta_f:
            self.scale = 1.0
        else:
            self.scale = nn.Parameter(torch.tensor(scale_init))
        # nn.Linear's own init is the official kaiming_uniform(a=sqrt(5)).
        self.mlp_token2feat = nn.Linear(embed_dims, embed_dims)
        self.mlp_delta_f = nn.Linear(embed_dims, embed_dims)
        if zero_mlp_delta_f:
            nn.init.zeros_(self.mlp_delta_f.weight)
            nn.init.zeros_(self.mlp_delta_f.bias)
        if link_token_to_query:
            self.transform = nn.Linear(embed_dims, query_dims)
            self.merge = nn.Linear(query_dims * 3, query_dims)

    def _token_init_range(self, fan: float) -> float:
        # The official (VPT-style) uniform range: sqrt(6 / (3 * patch area + fan)).
        return math.sqrt(6.0 / (3 * self.patch_size * self.patch_size + fan))

    def _make_tokens(self):
        self.learnable_tokens = nn.Parameter(
            torch.empty(self.num_layers, self.token_length, self.embed_dims))
        val = self._token_init_range(self.embed_dims)
        nn.init.uniform_(self.learnable_tokens, -val, val)

    def get_tokens(self, layer: int) -> torch.Tensor:
        """Tokens of one layer (token_length, D), or of all layers (L, token_length, D) for -1."""
        return self.learnable_tokens if layer == -1 else self.learnable_tokens[layer]

    def forward(self, tokens: torch.Tensor, layer: int, num_prefix_tokens: int = 1) -> torch.Tensor:
        """Refine ``tokens`` (B, N, D) after block ``layer``; prefix tokens (cls, registers) pass
        through unchanged."""
        prefix, feats = tokens[:, :num_prefix_tokens], tokens[:, num_prefix_tokens:]
        t = self.get_tokens(layer)
        attn = torch.einsum('bnc,mc->bnm', feats, t)
        if self.use_softmax:
            attn = F.softmax(attn * self.embed_dims**-0.5, dim=-1)
        delta = torch.einsum('bnm,mc->bnc', attn[..., 1:], self.mlp_token2feat(t[1:]))
        delta = self.mlp_delta_f(delta + feats)
        return torch.cat([prefix, feats + delta * self.scale], dim=1)

    def link_queries(self) -> torch.Tensor:
        """The Mask2Former queries (token_length, query_dims) linked to the tokens."""
        q = self.transform(self.get_tokens(-1))  # (L, T, Q)
        # max, mean and last layer, interleaved per channel as the official pooling + flatten.
        q = torch.stack([q.amax(0), q.mean(0), q[-1]], dim=-1)
        return self.merge(q.flatten(-2))


@MODELS.register_module()
class LoRAReins(Reins):
    """``Reins`` whose tokens are low-rank: ``learnable_tokens_a`` (L, token_length, lora_dim) @
    ``learnable_tokens_b`` (L, lora_dim, D). Rein's default (``lora_dim`` 16)."""

    def __init__(self, lora_dim: int = 16, **kwargs):
        self.lora_dim = lora_dim
        super().__init__(**kwargs)

    def _make_tokens(self):
        L, T, r, D = self.num_layers, self.token_length, self.lora_dim, self.embed_dims
        self.learnable_tokens_a = nn.Parameter(torch.empty(L, T, r))
        self.learnable_tokens_b = nn.Parameter(torch.empty(L, r, D))
        val = self._token_init_range((D * r)**0.5)
        nn.init.uniform_(self.learnable_tokens_a, -val, val)
        nn.init.uniform_(self.learnable_tokens_b, -val, val)

    def get_tokens(self, layer: int) -> torch.Tensor:
        if layer == -1:
            return self.learnable_tokens_a @ self.learnable_tokens_b
        return self.learnable_tokens_a[layer] @ self.learnable_tokens_b[layer]


def _shape_mismatches(state_dict: dict, prefix: str, own: dict) -> List[str]:
    return [f'{k}: checkpoint {tuple(state_dict[prefix + k].shape)}, model {tuple(v.shape)}'
            for k, v in own.items()
            if prefix + k in state_dict and tuple(state_dict[prefix + k].shape) != tuple(v.shape)]


@MODELS.register_module()
class ReinBackbone(AdapterBackbone):
    """A frozen trunk with ``Reins`` after every block (official ``ReinsDinoVisionTransformer``).

    Only ``reins`` trains: the trunk has no gradients and stays in eval mode, as the official
    ``train()`` sets it (``set_requires_grad``/``set_train`` with the keyword ``reins``). The
    autograd graph runs through the frozen blocks, which the Reins of earlier blocks need.

    Returns ``(feats, queries)`` with ``link_token_to_query`` (for ``ReinMask2FormerHead``), else
    a tuple of feature maps. Each map is the un-normed patch tokens after a block in
    ``out_indices`` (B, D, h, w), resized by its ``feat_scales`` entry (bilinear).

    Checkpoints of the official code load as they are: their trunk keys (``backbone.blocks.*``,
    ``backbone.pos_embed`` ...) go to ``trunk.*``. A checkpoint with ``reins`` and head only (as
    the official releases) takes the trunk from its own ``pretrained`` file, and is refused when
    the trunk has none (see :class:`AdapterBackbone`). A checkpoint for another trunk size, depth
    or token length is refused with the shapes.

    Args:
        trunk (dict): Trunk config (any module with the trunk interface of ``trunk.py``).
        reins (dict): ``Reins``/``LoRAReins`` config. ``num_layers``, ``embed_dims`` and
            ``patch_size`` default to the trunk's; given values must agree with it.
        out_indices (Sequence[int]): Blocks whose outputs are returned, in this order.
        feat_scales (Sequence[float] | None): Resize factor per output, paired with
            ``out_indices`` by position (official: 4, 2, 1, 0.5, a feature pyramid for
            Mask2Former). None: no resizing.
    """

    method = 'Rein'

    def __init__(self,
                 trunk: dict,
                 reins: dict,
                 out_indices: Sequence[int],
                 feat_scales: Optional[Sequence[float]] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(trunk, out_indices, feat_scales, init_cfg)
        self.reins = MODELS.build(self.trunk_sizes(reins))
        self.freeze_all_but_method()

    def is_method_param(self, name: str) -> bool:
        return name.startswith('reins.')

    def convert_checkpoint(self, state_dict, prefix):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rel = key[len(prefix):]
            if not rel.startswith(('reins.', 'trunk.')):  # the official trunk keys
                state_dict[prefix + 'trunk.' + rel] = state_dict.pop(key)
        bad = _shape_mismatches(state_dict, prefix + 'reins.', self.reins.state_dict())
        bad += _shape_mismatches(state_dict, prefix + 'trunk.', self.trunk.state_dict())
        if bad:
            raise ValueError(
                'Rein checkpoint does not fit this model (another trunk size, depth, patch size '
                'or token length?): ' + '; '.join(bad[:6]) + '. Set the trunk arch/patch_size '
                "and the reins' token_length/lora_dim to those the checkpoint was trained with.")

    def run_block(self, i, block, tokens, grid):
        return self.reins(self.trunk.apply_block(block, tokens, grid), i,
                          self.trunk.num_prefix_tokens)

    def outputs(self, feats):
        if self.reins.link_token_to_query:
            return feats, self.reins.link_queries()
        return tuple(feats)
