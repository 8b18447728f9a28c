"""A feature pyramid from ViT-Split's single map, for multi-scale heads such as Mask2Former."""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from mmseg.registry import MODELS


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Rescale one feature map to several resolutions (ViTDet's simple feature pyramid).

    Each scale factor s gets its own branch: s = 4 two stride-2 transposed convs (norm and GELU
    between them), s = 2 one, s = 1 the identity, s = 0.5 a 2x2 max pool; each branch then
    projects to ``out_channels`` with a 1x1 and a 3x3 conv, both normed.

    Args:
        in_channels (int): Channels C of the input map.
        out_channels (int): Channels of every output level. Default: 256.
        scale_factors (Sequence[float]): Output resolution of each level relative to the input,
            from 4, 2, 1 and 0.5. Default: (4, 2, 1, 0.5).
        norm_cfg (dict): Norm of the upsampling and projection layers. Default: GroupNorm with
            32 groups (runs on any device and batch size).
        init_cfg (dict | list[dict], optional): mmengine init config.

    Shapes:
        input: a tuple whose last element is (B, C, h, w) (the backbone's output).
        output: tuple of (B, out_channels, s * h, s * w) for each s (floor for s = 0.5).
    """

    def __init__(self, in_channels: int, out_channels: int = 256,
                 scale_factors: Sequence[float] = (4, 2, 1, 0.5),
                 norm_cfg: dict = dict(type='GN', num_groups=32), init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.scale_factors = tuple(scale_factors)
        self.rescales = nn.ModuleList()
        self.projections = nn.ModuleList()
        for scale in self.scale_factors:
            rescale, channels = self._rescale(scale, in_channels, norm_cfg)
            self.rescales.append(rescale)
            self.projections.append(nn.Sequential(
                ConvModule(channels, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None),
                ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg,
                           act_cfg=None)))

    @staticmethod
    def _rescale(scale: float, channels: int, norm_cfg: dict) -> Tuple[nn.Module, int]:
        """The branch changing the resolution by ``scale``, and its output channels."""
        if scale == 4:
            return nn.Sequential(
                nn.ConvTranspose2d(channels, channels // 2, 2, stride=2),
                build_norm_layer(norm_cfg, channels // 2)[1], nn.GELU(),
                nn.ConvTranspose2d(channels // 2, channels // 4, 2, stride=2)), channels // 4
        if scale == 2:
            return nn.ConvTranspose2d(channels, channels // 2, 2, stride=2), channels // 2
        if scale == 1:
            return nn.Identity(), channels
        if scale == 0.5:
            return nn.MaxPool2d(2, stride=2), channels
        raise ValueError(f'SimpleFeaturePyramid: scale factors must be 4, 2, 1 or 0.5, got {scale}')

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        x = inputs[-1]
        return tuple(project(rescale(x)) for rescale, project in zip(self.rescales,
                                                                      self.projections))
