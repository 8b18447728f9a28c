"""The linear decode heads of ViT-Split (SPEC section 3)."""
from typing import List

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import CrossEntropyLoss
from mmseg.registry import MODELS
from torch.profiler import record_function
from torch.utils.checkpoint import checkpoint

from .lean_loss import resized_cross_entropy


def cpu_inference(x: torch.Tensor) -> bool:
    """Eager CPU inference of a 4-D map: no autograd, not traced (ONNX export), not scripted."""
    return (x.device.type == 'cpu' and x.dim() == 4 and not torch.is_grad_enabled()
            and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and not torch.onnx.is_in_onnx_export())


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) in channels-last memory with canonical strides. A map that is already
    channels-last but whose size-1 dims carry other strides (a (1, N, C) token sequence
    transposed and reshaped, as trunks' ``to_map`` gives at batch 1) is restrided without a copy:
    convolutions judge the layout by all strides and would take the slow NCHW path on it."""
    if not x.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    B, C, H, W = x.shape
    return x.as_strided(x.shape, (C * H * W, 1, W * C, C), x.storage_offset())


def upsample4x(in_channels: int, channels: int) -> nn.Sequential:
    """Two stride-2 transposed convs, each followed by GroupNorm(32) and GELU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, channels, 2, stride=2), nn.GroupNorm(32, channels),
        nn.GELU(),
        nn.ConvTranspose2d(channels, channels, 2, stride=2), nn.GroupNorm(32, channels),
        nn.GELU())


class _BNLinearHead(BaseDecodeHead):
    """Base: a BatchNorm (SyncBN in multi-GPU configs) then the 1x1 classifier.

    Args:
        lean_loss (bool): Compute a plain cross-entropy loss (no class weights) on the resized
            logits chunk by chunk (same values and gradients, a fraction of the memory; see
            ``lean_loss.py``). Other losses, or a pixel sampler, take mmseg's path. Default True.
        Others: mmseg's ``BaseDecodeHead`` args; ``norm_cfg`` sets the BatchNorm (default BN).
    """

    channels_last_inference = True  # see forward; False: NCHW as in training

    def __init__(self, lean_loss: bool = True, **kwargs):
        kwargs.setdefault('norm_cfg', dict(type='BN', requires_grad=True))
        super().__init__(**kwargs)
        self.lean_loss = lean_loss
        self.bn = build_norm_layer(self.norm_cfg, self.channels)[1]

    def loss_by_feat(self, seg_logits: torch.Tensor, batch_data_samples) -> dict:
        with record_function('vitsplit.loss'):
            return self._loss(seg_logits, batch_data_samples)

    def _loss(self, seg_logits: torch.Tensor, batch_data_samples) -> dict:
        ce = self.loss_decode
        if not (self.lean_loss and self.sampler is None and isinstance(ce, CrossEntropyLoss)
                and not ce.use_sigmoid and not ce.use_mask and ce.class_weight is None):
            return super().loss_by_feat(seg_logits, batch_data_samples)
        labels = self._stack_batch_gt(batch_data_samples).squeeze(1)
        total, correct, valid = resized_cross_entropy(seg_logits, labels, self.ignore_index,
                                                      self.align_corners)
        # mmseg's reductions: mean over all pixels, or over non-ignored ones (+ eps) if asked.
        denom = (valid + torch.finfo(torch.float32).eps if ce.avg_non_ignore else labels.numel())
        return {ce.loss_name: ce.loss_weight * total / denom,
                'acc_seg': correct * 100.0 / valid.clamp_min(1)}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        with record_function('vitsplit.decode_head'):
            x = self._transform_inputs(inputs)
            if self.channels_last_inference and cpu_inference(x):
                # mkldnn runs the transposed convs, GroupNorm, BN and the 1x1 conv channels-last,
                # and the logits' final resize keeps the layout: 0.6x the time of NCHW (whose
                # transposed convs take a slow im2col path) on the CPU, same values up to float
                # rounding. The logits come out channels-last (strided, not copied).
                x = channels_last(x)
            return self.cls_seg(self.bn(self.features(x)))


@MODELS.register_module()
class LinearBNHead(_BNLinearHead):
    """BN -> 1x1 conv on the selected feature (``channels`` must equal ``in_channels``)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.in_channels != self.channels:
            raise ValueError(f'LinearBNHead: channels ({self.channels}) must equal in_channels '
                             f'({self.in_channels})')


@MODELS.register_module()
class ConvUpsampleLinearBNHead(_BNLinearHead):
    """ConvT-GN-GELU x2 (4x upsampling) -> BN -> dropout -> 1x1 conv: every shipped config's head.

    Logits come out at 4x the feature grid. Module names match the original
    ``DconvUpsamplingBNHead`` checkpoints (``up.{0,1,3,4}``, ``bn``, ``conv_seg``).

    Args:
        checkpoint_upsample (bool): In training, recompute the upsampling stage in backward
            instead of keeping its activations (same results, less memory). Default True.
        Others as :class:`_BNLinearHead`.
    """

    def __init__(self, checkpoint_upsample: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.checkpoint_upsample = checkpoint_upsample
        self.up = upsample4x(self.in_channels, self.channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint_upsample and self.training and torch.is_grad_enabled():
            # Stateless layers: recomputing them in backward frees their full-size activations.
            return checkpoint(self.up, x, use_reentrant=False)
        return self.up(x)


@MODELS.register_module()
class MultiScaleConvUpsampleLinearBNHead(_BNLinearHead):
    """Concat features -> 1x1 -> GELU -> 3x3 -> GELU -> 4x upsampling -> BN -> 1x1.

    Use with ``input_transform='resize_concat'`` and lists for ``in_channels``/``in_index``.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault('input_transform', 'resize_concat')
        super().__init__(**kwargs)
        self.fuse = nn.Sequential(
            nn.Conv2d(self.in_channels, self.channels, 1), nn.GELU(),
            nn.Conv2d(self.channels, self.channels, 3, padding=1), nn.GELU())
        self.up = upsample4x(self.channels, self.channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.fuse(x))
