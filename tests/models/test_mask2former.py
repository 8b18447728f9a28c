"""ViT-Split + Mask2Former: the shipped config trains on CPU, and its pixel decoder attends with
mmseg_custom's deformable attention."""
import os.path as osp

import pytest
import torch
from mmcv.ops import MultiScaleDeformableAttention as MMCVMultiScaleDeformableAttention
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmengine.utils import import_modules_from_strings
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_custom  # noqa: F401 (registers the modules)
from mmseg_custom.ops import MultiScaleDeformableAttention
from mmseg_custom.ops import attention as attention_module

CONFIG = 'configs/ade20k/vitsplit/mask2former_dinov2_vitsplit_small_512_40k_ade20k.py'
NUM_CLASSES = 3
SIZE = 112  # an 8x8 grid of 14-pixel patches


def tiny_config(repo_dir, width=32):
    """The small config with a random 4-block, 64-wide trunk, and a ``width``-channel head with
    few queries, layers and points: about a second per training step on a 2-core CPU."""
    cfg = Config.fromfile(osp.join(repo_dir, CONFIG))
    import_modules_from_strings(**cfg.custom_imports)  # registers MSDAPixelDecoder
    model = cfg.model
    model.data_preprocessor.size = (SIZE, SIZE)
    model.backbone.trunk.update(arch=dict(embed_dims=64, depth=4, num_heads=2), pretrained=None)
    model.backbone.update(out_indices=[1, 2], select_layers=[2, 3], channels=64)
    model.neck.update(in_channels=64, out_channels=width)
    head = model.decode_head
    head.update(in_channels=[width] * 4, feat_channels=width, out_channels=width,
                num_classes=NUM_CLASSES, num_queries=6)
    encoder, decoder = head.pixel_decoder.encoder, head.transformer_decoder
    encoder.num_layers, decoder.num_layers = 2, 3
    for part in (head.pixel_decoder, head):
        part.positional_encoding.num_feats = width // 2
    for layer_cfg in (encoder.layer_cfg, decoder.layer_cfg):
        layer_cfg.ffn_cfg.update(embed_dims=width, feedforward_channels=2 * width)
        for key in ('self_attn_cfg', 'cross_attn_cfg'):
            if key in layer_cfg:
                layer_cfg[key].update(embed_dims=width, num_heads=4)
    head.loss_cls.class_weight = [1.0] * NUM_CLASSES + [0.1]
    head.train_cfg.num_points = 1024
    cfg.optim_wrapper.optimizer.lr = 1e-3
    return cfg


def tiny_batch():
    """Two images with a bright and a dark rectangle (classes 1 and 2) on a mid-grey class 0."""
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for i in range(2):
        label = torch.zeros(SIZE, SIZE, dtype=torch.long)
        label[10 + 20 * i:60 + 20 * i, 15:70] = 1
        label[70:100, 50 + 10 * i:105] = 2
        image = torch.tensor([128, 250, 5])[label] + torch.randint(0, 20, label.shape,
                                                                   generator=gen)
        inputs.append(image.clamp(0, 255).to(torch.uint8).expand(3, -1, -1).clone())
        samples.append(SegDataSample(gt_sem_seg=PixelData(data=label[None])))
    return dict(inputs=inputs, data_samples=samples)


@pytest.fixture
def tiny_model(repo_dir):
    torch.manual_seed(0)
    cfg = tiny_config(repo_dir)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model, cfg


def test_pixel_decoder_attends_with_our_op(tiny_model, monkeypatch):
    model, cfg = tiny_model
    decoder = model.decode_head.pixel_decoder
    attentions = [m for m in decoder.modules()
                  if isinstance(m, MMCVMultiScaleDeformableAttention)]
    assert len(attentions) == cfg.model.decode_head.pixel_decoder.encoder.num_layers
    assert all(type(m) is MultiScaleDeformableAttention for m in attentions)

    calls = []
    original = attention_module.multi_scale_deformable_attn

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(attention_module, 'multi_scale_deformable_attn', counted)
    model.eval()
    with torch.no_grad():
        logits = model.encode_decode(torch.randn(1, 3, SIZE, SIZE),
                                     [dict(img_shape=(SIZE, SIZE))])
    assert logits.shape == (1, NUM_CLASSES, SIZE, SIZE)
    assert len(calls) == len(attentions)


def test_loss_decreases_on_cpu(tiny_model):
    model, cfg = tiny_model
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = tiny_batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = []
    for _ in range(10):
        log_vars = model.train_step(batch, optim_wrapper)
        losses.append(log_vars['loss'].item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < 0.85 * losses[0], losses
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {n.split('.')[0] for n in changed} == {'backbone', 'neck', 'decode_head'}
    assert not any(n.startswith('backbone.trunk.') for n in changed)
