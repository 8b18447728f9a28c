"""FrozenAwareOptimWrapperConstructor: frozen trunk left out, equal groups merged, same updates."""
import copy

import torch
from mmengine.optim import DefaultOptimWrapperConstructor, build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401

init_default_scope('mmseg')

PARAMWISE = dict(norm_decay_mult=0.0, custom_keys={'backbone.task_head': dict(lr_mult=0.1)})


def tiny_vitsplit():
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='ViTSplit', trunk=dict(type='DINOv2', arch=dict(
            embed_dims=32, depth=4, num_heads=2)), out_indices=[0, 1], select_layers=[2, 3],
            channels=32),
        decode_head=dict(type='ConvUpsampleLinearBNHead', in_channels=32, channels=32,
                         num_classes=3, dropout_ratio=0)))
    model.init_weights()
    return model


def options_by_param(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: {k: v for k, v in g.items() if k != 'params'}
            for g in optimizer.param_groups for p in g['params']}


def test_groups_merged_with_each_parameter_keeping_its_options():
    model = tiny_vitsplit()
    cfg = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
               paramwise_cfg=PARAMWISE)
    ours = build_optim_wrapper(model, dict(cfg, constructor='FrozenAwareOptimWrapperConstructor'))
    ref = DefaultOptimWrapperConstructor(dict(optimizer=cfg['optimizer']), PARAMWISE)(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    ours_opts = options_by_param(ours.optimizer, model)
    ref_opts = {n: o for n, o in options_by_param(ref.optimizer, model).items() if n in trainable}
    assert set(ours_opts) == trainable  # the frozen trunk is out, every trainable param is in
    assert ours_opts == ref_opts
    distinct = {tuple(sorted((k, repr(v)) for k, v in o.items())) for o in ref_opts.values()}
    # Task head at 0.1x lr (custom keys win over norm_decay_mult), the rest with/without decay.
    assert len(distinct) == 3
    assert len(ours.optimizer.param_groups) == 3 < len(ref.optimizer.param_groups)
    assert {g['lr'] for g in ours.optimizer.param_groups} == {1e-3, 1e-4}


def test_merged_groups_give_the_same_update():
    model = tiny_vitsplit()
    twin = copy.deepcopy(model)
    cfg = dict(optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05),
               paramwise_cfg=PARAMWISE)
    ours = build_optim_wrapper(model, dict(cfg, constructor='FrozenAwareOptimWrapperConstructor'))
    ref = DefaultOptimWrapperConstructor(dict(optimizer=cfg['optimizer']), PARAMWISE)(twin)
    x = torch.randn(2, 3, 56, 56)
    for m, wrapper in ((model, ours), (twin, ref)):
        for _ in range(3):
            loss = m.extract_feat(x)[0].square().mean() + sum(
                p.square().sum() for p in m.decode_head.parameters())
            wrapper.update_params(loss)
    for (n, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
