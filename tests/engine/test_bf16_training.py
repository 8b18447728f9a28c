"""--amp: bf16 autocast training steps track fp32 ones."""
import copy

import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_custom  # noqa: F401


def test_bf16_wrapper_autocasts_and_losses_track_fp32():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=dict(type='ViTSplit', trunk=dict(type='DINOv2', arch=dict(
            embed_dims=64, depth=3, num_heads=2)), out_indices=[0, 2], select_layers=[2]),
        decode_head=dict(type='ConvUpsampleLinearBNHead', in_channels=64, channels=64,
                         num_classes=3, dropout_ratio=0, norm_cfg=dict(type='BN'))))
    model.init_weights()
    x = torch.randn(2, 3, 56, 56)
    samples = [SegDataSample(gt_sem_seg=PixelData(data=(x[i, :1] > 0).long() +
                                                  (x[i, 1:2] > 1).long())) for i in range(2)]
    losses = {}
    for kind in ('OptimWrapper', 'BF16OptimWrapper'):
        m = copy.deepcopy(model)
        wrapper = build_optim_wrapper(m, dict(type=kind, optimizer=dict(type='AdamW', lr=1e-3)))
        seen = []
        for _ in range(5):
            with wrapper.optim_context(m):
                out = m.loss(x, samples)
                dtype = m.backbone.task_head[0].mlp.fc1(torch.randn(1, 64)).dtype
            wrapper.update_params(out['decode.loss_ce'])
            seen.append(out['decode.loss_ce'].item())
        losses[kind] = seen
        assert dtype == (torch.bfloat16 if kind.startswith('BF16') else torch.float32)
        assert all(p.dtype == torch.float32 for p in m.parameters())
    fp32, bf16 = losses['OptimWrapper'], losses['BF16OptimWrapper']
    assert fp32[-1] < fp32[0] and bf16[-1] < bf16[0]
    for a, b in zip(fp32, bf16):
        assert abs(a - b) < 0.05 * abs(a), (fp32, bf16)
