"""EoMT's prediction head: queries, class and mask heads, the upscaling ScaleBlocks, the masked
attention and its annealed per-block probabilities, and the Mask2Former set loss.

The tokens it reads come from the encoder (``encoders.py``); the loop over the blocks is the
segmentor's (``segmentor.py``). Names follow the official checkpoints (tue-mps/eomt ``network.*``:
``q``, ``class_head``, ``mask_head``, ``upscale``, ``attn_mask_probs``).
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from mmseg.utils import SampleList


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map (timm's ``LayerNorm2d``, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ScaleBlock(nn.Module):
    """x2 upscaling: ConvTranspose2d(2, stride 2) -> GELU -> depthwise 3x3 conv (no bias) ->
    LayerNorm2d, all at width ``dim``.

    Args:
        dim (int): Channels in and out.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.norm = LayerNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv2(self.act(self.conv1(x))))


def num_upscale_blocks(patch_size: int) -> int:
    """ScaleBlocks from the patch grid to the mask grid: stride 4 for patch 16, 2 for patch 14
    (the official rule ``max(1, int(log2(patch)) - 2)``)."""
    return max(1, int(math.log2(patch_size)) - 2)


def mask_annealing(start: int, end: int, it: int, power: float = 0.9) -> float:
    """Probability that a query keeps its attention mask at iteration ``it`` (the official
    ``LightningModule.mask_annealing``): 1 before ``start``, 0 from ``end`` on, polynomially
    decayed ``(1 - progress) ** power`` in between."""
    if it < start:
        return 1.0
    if it >= end:
        return 0.0
    return (1.0 - (it - start) / (end - start)) ** power


def seg_to_instances(data_sample, ignore_index: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """One binary mask per class present in ``gt_sem_seg`` (ignored pixels in none): the
    semantic targets as a set, as the official semantic datasets give them."""
    seg = data_sample.gt_sem_seg.data[0]
    labels = torch.unique(seg)
    labels = labels[labels != ignore_index]
    masks = seg[None] == labels[:, None, None]
    return labels.long(), masks


@MODELS.register_module()
class EoMTHead(BaseModule):
    """EoMT's queries and heads (Kerssies et al., CVPR 2025), the loss included.

    Per predicting layer it reads the final-normed tokens: class logits ``class_head(q)`` with a
    last "no object" class, and mask logits ``einsum(mask_head(q), upscale(patches))`` on the
    stride-``patch / 2**n`` grid (stride 4 at patch 16). Semantic scores are the official
    ``einsum(sigmoid(masks), softmax(classes)[..., :-1])`` (sums over queries, not
    probabilities).

    Args:
        num_classes (int): Classes, without "no object".
        in_channels (int | None): Token width; the segmentor fills in the encoder's.
        patch_size (int | None): The trunk's patch size (number of ScaleBlocks); filled in by the
            segmentor.
        num_queries (int): Learnable queries. Default 100.
        num_blocks (int): Last encoder blocks that carry the queries. Default 4.
        masked_attn (bool): Predict before each query block and mask the query -> patch
            attention with the prediction (official ``masked_attn_enabled``). False: one
            prediction after the last block, no masks. Default True.
        ignore_index (int): Label ignored by the loss. Default 255.
        align_corners (bool): For mmseg's resizing of the scores. Default False.
        loss_cls, loss_mask, loss_dice (dict): mmdet losses (official weights 2, 5, 5; the
            class weight of "no object" 0.1).
        train_cfg (dict): ``num_points``, ``oversample_ratio``, ``importance_sample_ratio`` and
            the ``assigner`` (mmdet's HungarianAssigner with class/mask/dice costs 2/5/5).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: Optional[int] = None,
                 patch_size: Optional[int] = None,
                 num_queries: int = 100,
                 num_blocks: int = 4,
                 masked_attn: bool = True,
                 ignore_index: int = 255,
                 align_corners: bool = False,
                 loss_cls: Optional[dict] = None,
                 loss_mask: Optional[dict] = None,
                 loss_dice: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if in_channels is None or patch_size is None:
            raise ValueError('EoMTHead needs in_channels and patch_size (the EoMT segmentor fills '
                             'them in from its encoder)')
        self.num_classes = self.out_channels = num_classes
        self.num_queries = num_queries
        self.num_blocks = num_blocks
        self.masked_attn = masked_attn
        self.ignore_index = ignore_index
        self.align_corners = align_corners
        dim = in_channels
        self.q = nn.Embedding(num_queries, dim)
        self.class_head = nn.Linear(dim, num_classes + 1)
        self.mask_head = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.upscale = nn.Sequential(
            *[ScaleBlock(dim) for _ in range(num_upscale_blocks(patch_size))])
        # 1 = the block's queries keep their masks, 0 = none do; annealed by EoMTMaskAnnealingHook
        # and saved with the model, as the official buffer.
        self.register_buffer('attn_mask_probs', torch.ones(num_blocks))
        self.loss_cfgs = (loss_cls, loss_mask, loss_dice)
        self.train_cfg = train_cfg or {}
        self._losses = None

    # ----------------------------------------------------------------- prediction

    def predict_layer(self, queries: torch.Tensor, patches: torch.Tensor,
                      prior: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (B, Q, s*h, s*w) and class logits (B, Q, K+1) of one layer.

        Args:
            queries (Tensor): (B, Q, D) normed query tokens.
            patches (Tensor): (B, D, h, w) normed patch tokens.
            prior (Tensor | None): (B, D, h', w') features added to the upscaled patches
                (ViT-Split-EoMT's prior head), resized bilinearly to their grid.
        """
        feats = self.upscale(patches)
        if prior is not None:
            if prior.shape[-2:] == patches.shape[-2:]:
                # The prior head's maps (the patch grid): resized by the ScaleBlocks' factor,
                # which is the same bilinear resize (the scale is a power of 2, exact) and keeps
                # the traced ONNX graph free of a size: given as a size, the export fixes it.
                prior = F.interpolate(prior, scale_factor=2 ** len(self.upscale),
                                      mode='bilinear', align_corners=False)
            else:
                prior = F.interpolate(prior, feats.shape[-2:], mode='bilinear',
                                      align_corners=False)
            feats = feats + prior
        masks = torch.einsum('bqc,bchw->bqhw', self.mask_head(queries), feats)
        return masks, self.class_head(queries)

    def block_prob(self, k: int) -> float:
        """Probability that the queries of query block ``k`` keep their masks."""
        return float(self.attn_mask_probs[k]) if self.masked_attn else 0.0

    def attention_mask(self, mask_logits: torch.Tensor, grid: Tuple[int, int],
                       num_prefix: int, prob: float) -> torch.Tensor:
        """(B, 1, N, N) boolean self-attention mask (True: attend) for tokens laid out as
        [prefix, queries, patches]: query -> patch entries where the mask logits, bilinearly
        resized to the patch grid, are > 0; all else open. With ``prob < 1`` each query drops
        its mask with probability ``1 - prob`` (also in eval, as the official)."""
        B, Q = mask_logits.shape[:2]
        h, w = grid
        keep = F.interpolate(mask_logits, (h, w), mode='bilinear').flatten(2) > 0
        if prob < 1:
            keep = keep | (torch.rand(B, Q, 1, device=keep.device) > prob)
        n = num_prefix + Q + h * w
        mask = keep.new_ones(B, n, n)
        mask[:, num_prefix:num_prefix + Q, num_prefix + Q:] = keep
        return mask[:, None]

    @staticmethod
    def semantic_scores(mask_logits: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) per-pixel class scores of (already resized) mask logits."""
        return torch.einsum('bqhw,bqc->bchw', mask_logits.sigmoid(),
                            class_logits.softmax(dim=-1)[..., :-1])

    def forward(self, x: Tuple[List[torch.Tensor], List[torch.Tensor]]) -> torch.Tensor:
        """Scores of the last layer at the mask grid."""
        masks, classes = x
        return self.semantic_scores(masks[-1], classes[-1])

    def predict(self, x: Tuple[List[torch.Tensor], List[torch.Tensor]],
                batch_img_metas: List[dict], test_cfg: dict) -> torch.Tensor:
        """Scores of the last layer at the input's size (mask logits resized before the
        sigmoid, as the official)."""
        meta = batch_img_metas[0]
        if isinstance(meta['img_shape'], torch.Size) or 'pad_shape' not in meta:
            size = tuple(meta['img_shape'][:2])  # slide crops: the crop
        else:
            size = tuple(meta['pad_shape'][:2])
        masks, classes = x
        masks = F.interpolate(masks[-1], size, mode='bilinear', align_corners=False)
        return self.semantic_scores(masks, classes[-1])

    # ----------------------------------------------------------------- loss

    def _build_losses(self):
        """mmdet's losses and assigner, built on first use (mmdet is needed for training only)."""
        if self._losses is None:
            import mmdet.models  # noqa: F401 (registers mmdet's losses and match costs)
            from mmdet.registry import MODELS as MMDET_MODELS
            from mmdet.registry import TASK_UTILS
            cls_cfg, mask_cfg, dice_cfg = self.loss_cfgs
            self._losses = dict(
                cls=MMDET_MODELS.build(cls_cfg), mask=MMDET_MODELS.build(mask_cfg),
                dice=MMDET_MODELS.build(dice_cfg),
                assigner=TASK_UTILS.build(self.train_cfg['assigner']))
            weight = cls_cfg.get('class_weight')
            if weight is None or len(weight) != self.num_classes + 1:
                raise ValueError('EoMTHead: loss_cls.class_weight must list num_classes + 1 '
                                 'weights (the last, "no object", 0.1 officially)')
        return self._losses

    def loss(self, x: Tuple[List[torch.Tensor], List[torch.Tensor]],
             batch_data_samples: SampleList, train_cfg: Optional[dict] = None) -> dict:
        """The set loss on every predicting layer (deep supervision, equal weights): the last
        layer's as ``loss_cls``/``loss_mask``/``loss_dice``, the one before query block ``k`` as
        ``b{k}.loss_*``."""
        targets = [seg_to_instances(s, self.ignore_index) for s in batch_data_samples]
        masks, classes = x
        losses = {}
        for i, (m, c) in enumerate(zip(masks, classes)):
            prefix = '' if i == len(masks) - 1 else f'b{i}.'
            for name, value in self._loss_layer(m, c, targets).items():
                losses[prefix + name] = value
        return losses

    def _loss_layer(self, mask_logits: torch.Tensor, class_logits: torch.Tensor,
                    targets: List[Tuple[torch.Tensor, torch.Tensor]]) -> dict:
        from mmcv.ops import point_sample
        from mmdet.models.utils import get_uncertain_point_coords_with_randomness
        from mmdet.utils import reduce_mean
        from mmengine.structures import InstanceData
        parts = self._build_losses()
        cfg = self.train_cfg
        num_points = cfg.get('num_points', 12544)
        labels_all, pred_masks, gt_masks = [], [], []
        for b, (labels, masks) in enumerate(targets):
            # Hungarian matching on the same uniformly random points for predictions and targets.
            points = torch.rand(1, num_points, 2, device=mask_logits.device,
                                dtype=mask_logits.dtype)
            pred_pts = point_sample(mask_logits[b, :, None],
                                    points.expand(mask_logits.shape[1], -1, -1))[:, 0]
            gt_pts = point_sample(masks[:, None].to(mask_logits.dtype),
                                  points.expand(masks.shape[0], -1, -1))[:, 0]
            assign = parts['assigner'].assign(
                pred_instances=InstanceData(scores=class_logits[b].detach(),
                                            masks=pred_pts.detach()),
                gt_instances=InstanceData(labels=labels, masks=gt_pts), img_meta=None)
            pos = torch.nonzero(assign.gt_inds > 0, as_tuple=True)[0]
            matched = assign.gt_inds[pos] - 1
            target = labels.new_full((mask_logits.shape[1], ), self.num_classes)
            target[pos] = labels[matched]
            labels_all.append(target)
            pred_masks.append(mask_logits[b, pos])
            gt_masks.append(masks[matched])
        labels = torch.stack(labels_all).flatten()
        cls_scores = class_logits.flatten(0, 1)
        class_weight = cls_scores.new_tensor(parts['cls'].class_weight)
        loss_cls = parts['cls'](cls_scores, labels, avg_factor=class_weight[labels].sum())
        pred_masks, gt_masks = torch.cat(pred_masks), torch.cat(gt_masks)
        num_masks = max(reduce_mean(cls_scores.new_tensor([float(len(gt_masks))])).item(), 1.0)
        if len(gt_masks) == 0:
            zero = mask_logits.sum() * 0
            return dict(loss_cls=loss_cls, loss_mask=zero, loss_dice=zero)
        with torch.no_grad():
            points = get_uncertain_point_coords_with_randomness(
                pred_masks[:, None], None, num_points, cfg.get('oversample_ratio', 3.0),
                cfg.get('importance_sample_ratio', 0.75))
            gt_pts = point_sample(gt_masks[:, None].to(pred_masks.dtype), points)[:, 0]
        pred_pts = point_sample(pred_masks[:, None], points)[:, 0]
        loss_dice = parts['dice'](pred_pts, gt_pts, avg_factor=num_masks)
        loss_mask = parts['mask'](pred_pts.reshape(-1), gt_pts.reshape(-1),
                                  avg_factor=num_masks * num_points)
        return dict(loss_cls=loss_cls, loss_mask=loss_mask, loss_dice=loss_dice)


__all__: Sequence[str] = ('EoMTHead', 'ScaleBlock', 'LayerNorm2d', 'mask_annealing',
                          'num_upscale_blocks')
