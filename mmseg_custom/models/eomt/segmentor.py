"""EoMT as an mmseg segmentor: the encoder's blocks with the head's queries, one loop.

``extract_feat`` runs the blocks; before each of the last ``num_blocks`` it predicts masks and
classes from the normed tokens (the attention mask of that block comes from them), and once more
after the last block. The decode head turns the last prediction into per-pixel scores (inference)
or the set loss on all of them (training). Inference modes: mmseg's ``whole`` and ``slide``
(run in batches, see ``BatchedSlideEncoderDecoder``) and ``windows``, the official evaluation
(``windows.py``).
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

from ..segmentors.batched_slide import BatchedSlideEncoderDecoder
from .checkpoint import convert_official_state_dict


@MODELS.register_module()
class EoMT(BatchedSlideEncoderDecoder):
    """Encoder-only Mask Transformer (Kerssies et al., CVPR 2025) on any trunk.

    Args:
        backbone (dict): An EoMT encoder: ``EoMTEncoder`` (the trunk fine-tuned, the official
            model) or ``ViTSplitEoMTEncoder`` (frozen trunk, queries in ViT-Split's task head).
        decode_head (dict): ``EoMTHead``; its ``in_channels`` and ``patch_size`` default to the
            encoder's.
        delta_weights (bool): Checkpoints hold the trunk as differences to its pretrained
            weights (the published DINOv3 EoMT files): loading one adds the trunk's
            ``pretrained`` file to them. Default False.
        test_cfg (dict): mmseg's ``mode='whole'|'slide'`` or ``mode='windows'`` with
            ``crop_size`` (see ``window_inference``).
        Others: as mmseg's ``EncoderDecoder``.
    """

    def __init__(self, backbone: dict, decode_head: dict, delta_weights: bool = False, **kwargs):
        super().__init__(backbone=backbone, decode_head=decode_head, **kwargs)
        self.delta_weights = delta_weights
        self.register_load_state_dict_pre_hook(self._convert_official)

    def _init_decode_head(self, decode_head: dict) -> None:
        decode_head = dict(decode_head)
        decode_head.setdefault('in_channels', self.backbone.embed_dims)
        decode_head.setdefault('patch_size', self.backbone.patch_size)
        if decode_head['in_channels'] != self.backbone.embed_dims:
            raise ValueError(f"EoMT: decode_head.in_channels={decode_head['in_channels']}, the "
                             f'encoder is {self.backbone.embed_dims} wide')
        super()._init_decode_head(decode_head)
        if self.decode_head.num_blocks > len(self.backbone.blocks):
            raise ValueError(f'EoMT: num_blocks={self.decode_head.num_blocks} query blocks, the '
                             f'encoder runs {len(self.backbone.blocks)} blocks')

    def _convert_official(self, module, state_dict, prefix, *args):
        convert_official_state_dict(self, state_dict, prefix)

    def forward_layers(self, inputs: torch.Tensor, all_layers: bool = True
                       ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Mask logits (B, Q, h', w') and class logits (B, Q, K+1) of each predicting layer.

        ``all_layers=False`` (inference) skips the predictions before query blocks whose masks
        are off (``attn_mask_probs`` 0): only the last layer is used then, and it is the same.
        """
        enc, head = self.backbone, self.decode_head
        tokens, grid, prior = enc.stem(inputs)
        blocks = enc.blocks
        num_q, num_prefix = head.num_queries, enc.num_prefix_tokens
        start = len(blocks) - head.num_blocks
        masks, classes = [], []
        for i, blk in enumerate(blocks):
            attn_mask = None
            if i == start:
                q = head.q.weight[None].expand(tokens.shape[0], -1, -1).to(tokens.dtype)
                tokens = torch.cat((tokens[:, :num_prefix], q, tokens[:, num_prefix:]), dim=1)
            if i >= start and head.masked_attn:
                prob = head.block_prob(i - start)
                if all_layers or prob > 0:
                    m, c = head.predict_layer(*enc.norm(tokens, grid, num_q), prior)
                    masks.append(m)
                    classes.append(c)
                    if prob > 0:
                        attn_mask = head.attention_mask(m, grid, num_prefix, prob)
            tokens = enc.run_block(blk, tokens, grid, num_q if i >= start else 0, attn_mask)
        m, c = head.predict_layer(*enc.norm(tokens, grid, num_q), prior)
        masks = masks + [m]
        size, patch = inputs.shape[-2:], enc.patch_size
        # (n + patch - 1) // patch, not -(-n // patch): ONNX divides integers by truncation, so
        # the floor division of a negative traced size would be exported wrong.
        padded = tuple((n + patch - 1) // patch * patch for n in size)
        if padded != tuple(size):  # the trunk centre-padded the input: masks over the image only
            masks = [crop_padding(m, tuple(size), padded) for m in masks]
        return masks, classes + [c]

    def extract_feat(self, inputs: torch.Tensor):
        return self.forward_layers(inputs, all_layers=self.training)


def crop_padding(masks: torch.Tensor, size: Tuple[int, int],
                 padded: Tuple[int, int]) -> torch.Tensor:
    """Mask logits over a centre-padded input (``padded``) resampled (bilinearly) onto the image
    (``size``) at the same stride, so that losses and scores see the image's pixels only."""
    (h, w), (hp, wp) = size, padded
    out = (_stride_size(masks.shape[-2], h, hp), _stride_size(masks.shape[-1], w, wp))

    def axis(n_out, n, n_pad):  # pixel centres of the output in the padded frame, in [-1, 1]
        centres = (torch.arange(n_out, device=masks.device, dtype=masks.dtype) + 0.5) / n_out
        return (centres * n + (n_pad - n) // 2) / n_pad * 2 - 1

    ys, xs = axis(out[0], h, hp), axis(out[1], w, wp)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing='xy'), dim=-1)  # (out_h, out_w, (x, y))
    grid = grid[None].expand(masks.shape[0], -1, -1, -1)
    return F.grid_sample(masks, grid, mode='bilinear', align_corners=False)


def _stride_size(n_mask, n: int, n_pad: int):
    """Mask cells over ``n`` of ``n_pad`` padded pixels: ``max(1, round(n_mask * n / n_pad))``.
    While tracing (ONNX export) the sizes are traced tensors, and the count is computed as ops
    (``torch.round`` rounds half to even, as Python's ``round``), so the graph follows the input
    size."""
    if torch.jit.is_tracing() and isinstance(n_mask * n, torch.Tensor):
        return torch.round(n_mask * n / n_pad).long().clamp(min=1)
    return max(1, round(n_mask * n / n_pad))
