"""test_cfg.mode='windows' (EoMT's official evaluation windows) on any BatchedSlideEncoderDecoder:
a ViT-Split model's scores are the crops' logits averaged by hand."""
import torch
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401


def vitsplit_segmentor(**test_cfg):
    init_default_scope('mmseg')
    cfg = dict(
        type='BatchedSlideEncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=dict(type='ViTSplit', trunk=dict(type='DINOv2', arch=dict(
            embed_dims=32, depth=3, num_heads=2)), out_indices=[0, 2], select_layers=[2],
            channels=32),
        decode_head=dict(type='ConvUpsampleLinearBNHead', in_channels=32, channels=32,
                         num_classes=4, dropout_ratio=0, norm_cfg=dict(type='BN')),
        test_cfg=ConfigDict(test_cfg))
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


def test_windows_mode_averages_the_crops_by_hand():
    # 56 x 84 with crop 56: the short side is the crop already (no resize); ceil(84 / 56) = 2
    # windows spaced edge to edge, at x = 0 and 28, overlapping on columns 28..55.
    model = vitsplit_segmentor(mode='windows', crop_size=(56, 56))
    x = torch.randn(1, 3, 56, 84)
    metas = [dict(img_shape=(56, 84), ori_shape=(56, 84))]
    crop_metas = [dict(img_shape=torch.Size((56, 56)), ori_shape=(56, 84))]
    with torch.no_grad():
        scores = model.inference(x, [dict(m) for m in metas])
        left = model.encode_decode(x[..., 0:56], crop_metas)
        right = model.encode_decode(x[..., 28:84], crop_metas)
    expected = torch.zeros(1, 4, 56, 84)
    count = torch.zeros(1, 1, 56, 84)
    expected[..., 0:56] += left
    expected[..., 28:84] += right
    count[..., 0:56] += 1
    count[..., 28:84] += 1
    expected /= count
    assert scores.shape == (1, 4, 56, 84)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(scores[..., :28], left[..., :28], rtol=0, atol=1e-6)
    torch.testing.assert_close(scores[..., 56:], right[..., 28:], rtol=0, atol=1e-6)


def test_windows_mode_with_one_window_is_whole_inference():
    model = vitsplit_segmentor(mode='windows', crop_size=(56, 56))
    x = torch.randn(2, 3, 56, 56)
    metas = [dict(img_shape=(56, 56), ori_shape=(56, 56))] * 2
    with torch.no_grad():
        windows = model.inference(x, [dict(m) for m in metas])
        model.test_cfg = ConfigDict(mode='whole')
        whole = model.inference(x, [dict(m, pad_shape=(56, 56)) for m in metas])
    torch.testing.assert_close(windows, whole, rtol=0, atol=1e-6)


def test_windows_mode_refuses_rectangular_crops():
    import pytest
    model = vitsplit_segmentor(mode='windows', crop_size=(56, 112))
    with pytest.raises(ValueError, match=r'takes square crops .* crop_size=\(56, 112\)'):
        model.inference(torch.zeros(1, 3, 56, 56), [dict(img_shape=(56, 56),
                                                         ori_shape=(56, 56))])

