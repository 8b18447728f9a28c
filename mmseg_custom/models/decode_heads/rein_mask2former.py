"""Rein's Mask2Former head: the queries come from the backbone's Reins tokens."""
from types import SimpleNamespace

import torch
import torch.nn as nn
from mmseg.models.decode_heads import Mask2FormerHead
from mmseg.registry import MODELS


@MODELS.register_module()
class ReinMask2FormerHead(Mask2FormerHead):
    """mmseg's ``Mask2FormerHead`` fed with the queries that ``ReinBackbone`` links to its tokens
    (official ``rein/models/heads/rein_mask2former.py``).

    Input: ``(feats, queries)`` with ``queries`` (num_queries, feat_channels). The
    queries replace the learned positional query embedding (``query_embed`` is removed); with
    ``replace_query_feat`` they also give the initial query features through ``querys2feat``
    (a Linear), instead of the learned ``query_feat``. Parameter names match the official ones.

    Args:
        replace_query_feat (bool): See above. Default False (the official default; Rein's
            configs set True).
        Others: mmseg's ``Mask2FormerHead``.
    """

    def __init__(self, replace_query_feat: bool = False, **kwargs):
        super().__init__(**kwargs)
        del self.query_embed
        self.query_dims = kwargs['feat_channels']
        self.replace_query_feat = replace_query_feat
        if replace_query_feat:
            del self.query_feat
            self.querys2feat = nn.Linear(self.query_dims, self.query_dims)

    def forward(self, x, batch_data_samples):
        if not (isinstance(x, (tuple, list)) and len(x) == 2 and torch.is_tensor(x[1])):
            raise TypeError('ReinMask2FormerHead takes (feats, queries) from a ReinBackbone with '
                            'reins=dict(link_token_to_query=True, ...); got '
                            f'{type(x).__name__} of {len(x)} items')
        feats, queries = x
        if tuple(queries.shape) != (self.num_queries, self.query_dims):
            raise ValueError(f'ReinMask2FormerHead: queries of shape {tuple(queries.shape)}, '
                             f'expected (num_queries, feat_channels) = ({self.num_queries}, '
                             f'{self.query_dims}): set the reins token_length to num_queries')
        query_feat = (self.querys2feat(queries) if self.replace_query_feat
                      else self.query_feat.weight)
        # mmdet's forward reads its queries from self.query_feat.weight / self.query_embed.weight;
        # lending it the linked ones for this call reuses that forward instead of copying it.
        own_feat = self._modules.pop('query_feat', None)
        self.query_feat = SimpleNamespace(weight=query_feat)
        self.query_embed = SimpleNamespace(weight=queries)
        try:
            return super().forward(feats, batch_data_samples)
        finally:
            del self.query_feat, self.query_embed
            if own_feat is not None:
                self.query_feat = own_feat
