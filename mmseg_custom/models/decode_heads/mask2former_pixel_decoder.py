"""Mask2Former's pixel decoder with its deformable attention on ``mmseg_custom.ops``.

Not imported by ``import mmseg_custom`` (it needs mmdet and mmcv.ops): a config that uses it lists
this module in ``custom_imports``, as the Mask2Former configs do.
"""
from mmdet.models.layers import MSDeformAttnPixelDecoder
from mmseg.registry import MODELS

from ...ops import MultiScaleDeformableAttention


@MODELS.register_module()
class MSDAPixelDecoder(MSDeformAttnPixelDecoder):
    """mmdet's ``MSDeformAttnPixelDecoder`` whose encoder attends with
    :class:`mmseg_custom.ops.MultiScaleDeformableAttention`: the compiled kernels on CPU and
    CUDA where built (mmcv's module runs the PyTorch reference on CPU).

    Arguments, parameters and checkpoint keys are mmdet's: use it in a ``Mask2FormerHead`` as
    ``pixel_decoder=dict(type='MSDAPixelDecoder', ...)`` in place of
    ``type='mmdet.MSDeformAttnPixelDecoder'``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # mmdet's encoder layers build mmcv's attention by class, not through a registry, so
        # replace each with ours from the same config (same parameter names).
        for layer in self.encoder.layers:
            layer.self_attn = MultiScaleDeformableAttention(**layer.self_attn_cfg)
