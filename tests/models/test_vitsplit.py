"""ViT-Split backbone, gate variant and heads: gradients, freezing, errors, original checkpoints."""
import copy

import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401
from mmseg_custom.models.backbones.vit_split import convert_original_keys
from mmseg_custom.models.decode_heads.linear_heads import _BNLinearHead, channels_last

init_default_scope('mmseg')
TINY_TRUNK = dict(type='DINOv2', arch=dict(embed_dims=64, depth=4, num_heads=2))


def tiny_segmentor(gate=False, num_classes=5):
    backbone = dict(type='ViTSplitGate' if gate else 'ViTSplit', trunk=TINY_TRUNK,
                    select_layers=[2, 3], channels=64)
    if gate:
        backbone.update(out_indices=None, num_gated=2)
    else:
        backbone.update(out_indices=[1, 3, 3])
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=backbone,
        decode_head=dict(type='ConvUpsampleLinearBNHead', in_channels=64, channels=64,
                         num_classes=num_classes, dropout_ratio=0, norm_cfg=dict(type='BN')))
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def randomize(model, seed=0):
    """Non-trivial values everywhere (offsets and gates included), so comparisons mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.05 if p.dim() > 1 else 0.5)
                    + (1.0 if name.endswith('gamma') else 0.0))


@pytest.mark.parametrize('gate', [False, True])
def test_gradients_reach_exactly_the_trainable_parts(gate):
    model = tiny_segmentor(gate)
    randomize(model)
    model.train()
    assert not model.backbone.trunk.training, 'the frozen trunk must stay in eval mode'
    x = torch.randn(2, 3, 56, 70)
    out = model(x, mode='tensor')
    assert out.shape == (2, 5, 16, 20)  # 4x the 4x5 patch grid
    out.square().mean().backward()
    trainable = ('backbone.task_head.', 'backbone.prior_head.', 'backbone.fusion.',
                 'backbone.gate.', 'decode_head.')
    for name, p in model.named_parameters():
        if name.startswith('backbone.trunk.'):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert name.startswith(trainable), f'unexpected parameter {name}'
            assert p.requires_grad and p.grad is not None, f'{name} gets no gradient'
            assert p.grad.abs().sum() > 0, f'{name} gets a zero gradient'


def test_frozen_trunk_builds_no_graph_and_task_head_copies_trunk():
    model = tiny_segmentor()
    bb = model.backbone
    for i, blk in zip(bb.select_layers, bb.task_head):
        for (n, a), (_, b) in zip(blk.state_dict().items(), bb.trunk.blocks[i].state_dict().items()):
            assert torch.equal(a, b), f'task head block {i} {n} not initialised from the trunk'
        assert blk is not bb.trunk.blocks[i]
    for block in (bb.prior_head, bb.fusion):  # deformable convs start as plain 3x3 convs
        assert not block.offsets.weight.any() and not block.offsets.bias.any()
    feats, tokens, grid = bb.frozen_features(torch.randn(1, 3, 28, 28))
    assert not tokens.requires_grad and all(not f.requires_grad for f in feats.values())
    assert grid == (2, 2)


def test_task_head_starts_from_trunk_tokens():
    """With task-head weights equal to the trunk's, the task branch equals the trunk's last map."""
    bb = tiny_segmentor().backbone.eval()
    x = torch.randn(1, 3, 42, 42)
    feats, tokens, grid = bb.frozen_features(x)
    for blk in bb.task_head:
        tokens = bb.trunk.apply_block(blk, tokens, grid)
    torch.testing.assert_close(bb.trunk.to_map(tokens, grid), bb.trunk(x, [3])[0])


def test_gate_forward_values_and_straight_through():
    gate = tiny_segmentor(gate=True).backbone.gate
    w = gate()
    assert w.shape == (4, 2)
    torch.testing.assert_close(w.sum(0), torch.ones(2))
    assert ((w > 0).sum(0) == 2).all(), 'each column keeps exactly k blocks'
    (w[:, 0] * torch.arange(4.0)).sum().backward()  # a column's plain sum is always 1
    assert gate.scores.grad is not None and gate.scores.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs, match', [
    (dict(select_layers=[0, 1]), 'starting at >= 1'),
    (dict(select_layers=[1, 3]), 'contiguous'),
    (dict(out_indices=[7]), r'out_indices must be .* \[0, 4\)'),
])
def test_bad_indices_are_rejected(kwargs, match):
    cfg = dict(type='ViTSplit', trunk=TINY_TRUNK, out_indices=[1], select_layers=[2, 3])
    cfg.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MODELS.build(cfg)


def to_original_layout(state_dict, gate):
    """Our keys -> the original implementation's (the inverse of the load-time conversion)."""
    fusion = 'fusion_net' if gate else 'fusion_conv'
    out = {}
    for k, v in state_dict.items():
        k = (k.replace('backbone.trunk.', 'backbone.backbone.')
             .replace('backbone.task_head.', 'backbone.split_head.')
             .replace('backbone.gate.', 'backbone.learnable_gate.'))
        for ours, theirs in (('prior_head', 'frozen_conv'), ('fusion', fusion)):
            k = (k.replace(f'backbone.{ours}.proj.', f'backbone.{theirs}.0.')
                 .replace(f'backbone.{ours}.offsets.', f'backbone.{theirs}.2.offsets.')
                 .replace(f'backbone.{ours}.deform_conv.', f'backbone.{theirs}.2.deform_conv.'))
        out[k] = v
    if not gate:  # the original's dead SyncBN
        out.update({'backbone.bn_norm.weight': torch.ones(64), 'backbone.bn_norm.bias': torch.zeros(64)})
    return out


@pytest.mark.parametrize('gate', [False, True])
def test_original_layout_loads_to_the_same_model(gate, tmp_path):
    from mmengine.runner import load_checkpoint
    src = tiny_segmentor(gate).eval()
    randomize(src, seed=1)
    path = tmp_path / 'original.pth'
    torch.save({'state_dict': to_original_layout(src.state_dict(), gate)}, path)
    dst = tiny_segmentor(gate).eval()
    load_checkpoint(dst, str(path), map_location='cpu', strict=True)
    x = torch.randn(1, 3, 50, 61)
    torch.testing.assert_close(dst(x, mode='tensor'), src(x, mode='tensor'), rtol=0, atol=0)


def test_convert_original_keys_drops_only_bn_norm():
    sd = {'backbone.bn_norm.weight': 1, 'backbone.frozen_conv.2.offsets.bias': 2,
          'backbone.fusion_net.0.weight': 3, 'decode_head.up.0.weight': 4}
    dropped = convert_original_keys(copy.copy(sd), 'backbone.')
    assert dropped == ['backbone.bn_norm.weight']
    convert_original_keys(sd, 'backbone.')
    assert sd == {'backbone.prior_head.offsets.bias': 2, 'backbone.fusion.proj.weight': 3,
                  'decode_head.up.0.weight': 4}


# CPU inference runs the linear heads channels-last: same results as NCHW (training's layout).


def test_channels_last_restrides_batch_one_token_maps_without_a_copy():
    tokens = torch.randn(1, 20, 8)
    x = tokens.transpose(1, 2).reshape(1, 8, 4, 5)  # what to_map gives at batch 1
    y = channels_last(x)
    assert y.data_ptr() == x.data_ptr() and torch.equal(y, x)
    assert y.stride() == (160, 1, 40, 8)
    z = channels_last(torch.randn(2, 8, 4, 5))
    assert z.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('train', [False, True])
def test_segmentor_fast_inference_equals_reference(batch, train, monkeypatch):
    model = tiny_segmentor()
    randomize(model)
    model.train(train)
    x = torch.randn(batch, 3, 56, 70)
    metas = [dict(img_shape=(56, 70))] * batch
    with torch.no_grad():
        fast = model.encode_decode(x, metas)
        monkeypatch.setattr(_BNLinearHead, 'channels_last_inference', False)
        ref = model.encode_decode(x, metas)
    assert ref.is_contiguous()
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
