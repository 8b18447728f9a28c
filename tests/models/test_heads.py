"""Decode heads: the lean loss equals mmseg's loss; batched slide inference equals mmseg's."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_custom  # noqa: F401
from mmseg_custom.models.decode_heads.lean_loss import resized_cross_entropy

init_default_scope('mmseg')


def head(lean, **loss_kw):
    return MODELS.build(dict(
        type='ConvUpsampleLinearBNHead', in_channels=32, channels=32, num_classes=7,
        dropout_ratio=0, lean_loss=lean, align_corners=loss_kw.pop('align_corners', False),
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.7, **loss_kw)))


@pytest.mark.parametrize('loss_kw', [
    dict(), dict(avg_non_ignore=True), dict(align_corners=True)])
def test_lean_loss_equals_mmseg_loss_and_gradients(loss_kw):
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 13, 11, dtype=torch.float64)
    labels = torch.randint(0, 7, (2, 1, 50, 47))
    labels[:, :, :5] = 255  # ignored pixels
    samples = [SegDataSample(gt_sem_seg=PixelData(data=labels[i])) for i in range(2)]
    results = []
    for lean in (True, False):
        x = logits.clone().requires_grad_()
        losses = head(lean, **dict(loss_kw)).double().loss_by_feat(x, samples)
        losses['loss_ce'].backward()
        results.append((losses['loss_ce'].detach(), losses['acc_seg'], x.grad))
    (l_lean, acc_lean, g_lean), (l_ref, acc_ref, g_ref) = results
    # float64: agreement to ~1e-11 (PyTorch weights its bilinear taps slightly differently).
    torch.testing.assert_close(l_lean, l_ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g_lean, g_ref, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(acc_lean.double(), acc_ref.double().reshape(acc_lean.shape))


@pytest.mark.parametrize('chunk_above', [0, 2**22], ids=['chunked', 'whole'])
@pytest.mark.parametrize('align_corners', [False, True])
def test_resized_cross_entropy_both_paths_equal_plain_resize(chunk_above, align_corners):
    torch.manual_seed(1)
    logits = torch.randn(2, 7, 13, 11, dtype=torch.float64)
    labels = torch.randint(0, 7, (2, 50, 47))
    labels[0, 10:20] = 255
    x = logits.clone().requires_grad_()
    total, correct, valid = resized_cross_entropy(x, labels, 255, align_corners, chunk_rows=16,
                                                  chunk_above=chunk_above)
    total.backward()
    y = logits.clone().requires_grad_()
    full = F.interpolate(y, size=(50, 47), mode='bilinear', align_corners=align_corners)
    ref = F.cross_entropy(full, labels, ignore_index=255, reduction='sum')
    ref.backward()
    torch.testing.assert_close(total.detach(), ref.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-8, atol=1e-12)
    keep = labels != 255
    assert int(valid) == int(keep.sum())
    assert int(correct) == int(((full.argmax(1) == labels) & keep).sum())


@pytest.mark.parametrize('crop_batch', [3, None], ids=['3 crops', 'device default'])
def test_batched_slide_equals_mmseg_slide(crop_batch):
    model = toy_segmentor(mode='slide', crop_size=(42, 56), stride=(28, 30), crop_batch=crop_batch)
    x = torch.randn(2, 3, 90, 131)
    metas = [dict(img_shape=(90, 131), ori_shape=(90, 131))] * 2
    with torch.no_grad():
        ours = model.slide_inference(x, [dict(m) for m in metas])
        ref = EncoderDecoder.slide_inference(model, x, [dict(m) for m in metas])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def toy_segmentor(**test_cfg):
    """A toy ViT-Split BatchedSlideEncoderDecoder (seeded weights, eval) with this test_cfg."""
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


def test_slide_crops_that_leave_pixels_uncovered_are_an_error():
    # Stride above the crop: three crops a side leave rows 42..49 and columns 56..59 in none.
    model = toy_segmentor(mode='slide', crop_size=(42, 56), stride=(50, 60))
    metas = [dict(img_shape=(150, 200), ori_shape=(150, 200), img_path='val/0.jpg')]
    with pytest.raises(ValueError, match=r'val/0.jpg .*stride \(50, 60\) leave pixels of the '
                       r'height from 42 on in no crop.*model.test_cfg.stride=42,56'):
        model.slide_inference(torch.randn(1, 3, 150, 200), metas)


def test_slide_stride_above_crop_is_fine_where_crops_still_cover():
    # Two crops a side (the Pascal configs' stride 512 > crop 480 on 520 px images): covered.
    model = toy_segmentor(mode='slide', crop_size=(42, 56), stride=(50, 60))
    x, metas = torch.randn(1, 3, 80, 100), [dict(img_shape=(80, 100), ori_shape=(80, 100))]
    with torch.no_grad():
        ours = model.slide_inference(x, [dict(m) for m in metas])
        ref = EncoderDecoder.slide_inference(model, x, [dict(m) for m in metas])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


# test_cfg.mode='windows' (EoMT's official evaluation windows) on any BatchedSlideEncoderDecoder:
# a ViT-Split model's scores are the crops' logits averaged by hand.


def test_windows_mode_averages_the_crops_by_hand():
    # 56 x 84 with crop 56: the short side is the crop already (no resize); ceil(84 / 56) = 2
    # windows spaced edge to edge, at x = 0 and 28, overlapping on columns 28..55.
    model = toy_segmentor(mode='windows', crop_size=(56, 56))
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
    model = toy_segmentor(mode='windows', crop_size=(56, 56))
    x = torch.randn(2, 3, 56, 56)
    metas = [dict(img_shape=(56, 56), ori_shape=(56, 56))] * 2
    with torch.no_grad():
        windows = model.inference(x, [dict(m) for m in metas])
        model.test_cfg = ConfigDict(mode='whole')
        whole = model.inference(x, [dict(m, pad_shape=(56, 56)) for m in metas])
    torch.testing.assert_close(windows, whole, rtol=0, atol=1e-6)


def test_windows_mode_refuses_rectangular_crops():
    model = toy_segmentor(mode='windows', crop_size=(56, 112))
    with pytest.raises(ValueError, match=r'takes square crops .* crop_size=\(56, 112\)'):
        model.inference(torch.zeros(1, 3, 56, 56), [dict(img_shape=(56, 56),
                                                         ori_shape=(56, 56))])


def test_class_weighted_loss_takes_mmseg_path():
    h = head(True, class_weight=[0.5, 1, 2, 1, 1, 3, 0.1]).double()
    logits = torch.randn(1, 7, 5, 5, dtype=torch.float64)
    labels = torch.randint(0, 7, (1, 1, 20, 20))
    samples = [SegDataSample(gt_sem_seg=PixelData(data=labels[0]))]
    ref = head(False, class_weight=[0.5, 1, 2, 1, 1, 3, 0.1]).double()
    torch.testing.assert_close(h.loss_by_feat(logits, samples)['loss_ce'],
                               ref.loss_by_feat(logits, samples)['loss_ce'])


def tiny_fast_segmentor(**test_cfg):
    cfg = dict(
        type='BatchedSlideEncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=dict(type='ViTSplit', trunk=dict(type='DINOv2', arch=dict(
            embed_dims=64, depth=3, num_heads=2)), out_indices=[0, 2], select_layers=[2]),
        decode_head=dict(type='ConvUpsampleLinearBNHead', in_channels=64, channels=64,
                         num_classes=4, dropout_ratio=0, norm_cfg=dict(type='BN')),
        test_cfg=ConfigDict(mode='whole', **test_cfg))
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('fast', [dict(amp=True), dict(compile=True)])
def test_bf16_and_compiled_inference_match_fp32_eager(fast):
    ref = tiny_fast_segmentor()
    model = tiny_fast_segmentor(**fast)
    model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 84, 70)
    metas = [dict(img_shape=(84, 70))] * 2
    with torch.no_grad():
        expected, out = ref.encode_decode(x, metas), model.encode_decode(x, metas)
    assert out.dtype == torch.float32
    # bf16 keeps 8 mantissa bits: logits of scale ~1 agree to a few 1e-2; compile to float rounding.
    tol = 0.1 if fast.get('amp') else 1e-4
    torch.testing.assert_close(out, expected, rtol=0, atol=tol)
    agree = (out.argmax(1) == expected.argmax(1)).float().mean().item()
    assert agree >= (0.98 if fast.get('amp') else 1.0), f'predicted classes agree on {agree:.4f}'


def test_checkpointed_upsampling_gives_the_same_gradients():
    heads = [MODELS.build(dict(type='ConvUpsampleLinearBNHead', in_channels=32, channels=32,
                               num_classes=5, dropout_ratio=0, checkpoint_upsample=flag))
             for flag in (True, False)]
    heads[1].load_state_dict(heads[0].state_dict())
    x = torch.randn(2, 32, 6, 7)
    grads = []
    for h in heads:
        h.train()
        xi = x.clone().requires_grad_()
        h([xi]).square().mean().backward()
        grads.append([xi.grad] + [p.grad for p in h.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(heads[0].bn.running_mean, heads[1].bn.running_mean)
