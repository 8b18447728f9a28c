"""PEFT baselines (LoRA through peft, VPT-deep, AdaptFormer): what trains, counts, loading."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401
from mmseg_custom.utils.params import build_on_meta, count_params

TINY = dict(type='DINOv2', arch=dict(embed_dims=64, depth=3, num_heads=2), patch_size=8,
            img_size=32)
ADAPTERS = {
    'lora': dict(type='LoRAAdapter', r=4, lora_alpha=8),
    'vpt': dict(type='VPTDeep', num_tokens=5),
    'adaptformer': dict(type='AdaptFormerAdapter', bottleneck=16),
}


def build(adapter, **kw):
    init_default_scope('mmseg')
    return MODELS.build(dict(type='PEFTBackbone', trunk=TINY, adapter=adapter,
                             out_indices=[1, 2], **kw))


@pytest.mark.parametrize('name', sorted(ADAPTERS))
def test_gradients_reach_exactly_the_adapter_and_head(name):
    torch.manual_seed(0)
    backbone = build(ADAPTERS[name])
    head = torch.nn.Conv2d(64, 3, 1)
    backbone.train()
    assert not backbone.trunk.training
    feats = backbone(torch.randn(2, 3, 32, 32))
    sum(head(f).square().mean() for f in feats).backward()
    got = {n for n, p in backbone.named_parameters() if p.grad is not None}
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    adapter = {n for n, _ in backbone.named_parameters()
               if n.startswith('adapter.') or '.lora_' in n}
    assert adapter and trainable == adapter
    assert got == adapter
    assert all(p.grad is not None for p in head.parameters())


def test_adapters_start_at_the_frozen_trunk_for_lora_and_adaptformer():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    frozen = build(None).eval()
    for name in ('lora', 'adaptformer'):
        model = build(ADAPTERS[name]).eval()
        with model.adapter.loading_pretrained():  # trunk weights without LoRA's, as a file
            model.trunk.load_state_dict(frozen.trunk.state_dict())
        for a, b in zip(model(x), frozen(x)):
            torch.testing.assert_close(a, b)


def test_vpt_prompts_change_the_features_and_leave_the_shape():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    frozen, vpt = build(None).eval(), build(ADAPTERS['vpt']).eval()
    vpt.trunk.load_state_dict(frozen.trunk.state_dict())
    a, b = vpt(x)[-1], frozen(x)[-1]
    assert a.shape == b.shape == (1, 64, 4, 4)
    assert (a - b).abs().max() > 1e-3


def test_lora_is_peft_and_pretrained_weights_load_into_the_wrapped_trunk(tmp_path):
    from peft.tuners.lora import Linear as PeftLoRALinear
    torch.manual_seed(0)
    plain = build(None)
    path = tmp_path / 'dinov2_tiny.pth'
    torch.save(plain.trunk.state_dict(), path)
    model = build(dict(ADAPTERS['lora']), feat_scales=None)
    assert isinstance(model.trunk.blocks[0].attn.qkv, PeftLoRALinear)
    model.trunk.pretrained = str(path)
    model.init_weights()  # official-layout file into the peft-wrapped trunk
    torch.testing.assert_close(model.trunk.blocks[1].attn.qkv.base_layer.weight,
                               plain.trunk.blocks[1].attn.qkv.weight)


PAPER = {'lora': 0.79, 'vpt': 3.69, 'adaptformer': 3.17, 'frozen': 0.0}  # Rein, Table 1


@pytest.mark.parametrize('name', sorted(PAPER))
def test_counts_on_dinov2_large_are_reins_table(name, repo_dir):
    cfg = Config.fromfile(osp.join(repo_dir, 'configs', 'gtav', 'peft',
                                   f'mask2former_dinov2_{name}_large_512_40k_gtav.py'))
    groups = count_params(build_on_meta(cfg))
    in_backbone = sum(g['trainable'] for k, g in groups.items() if k.startswith('backbone'))
    assert round(in_backbone / 1e6, 2) == PAPER[name]


def test_adapter_sizes_contradicting_the_trunk_are_one_error():
    with pytest.raises(ValueError, match='embed_dims=32 contradicts the trunk'):
        build(dict(type='VPTDeep', embed_dims=32))


def test_trunk_random_init_leaves_lora_at_its_identity_start():
    model = build(ADAPTERS['lora'])
    model.init_weights()  # no pretrained file: the trunk draws its weights, LoRA B stays 0
    lora_b = [p for n, p in model.named_parameters() if '.lora_B.' in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)
