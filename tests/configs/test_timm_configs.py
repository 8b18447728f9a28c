"""The timm-trunk configs (DINOv3, VFM benchmark): each builds, trains one tiny step on the CPU
with the right parts learning, normalises images as its weights expect, and is counted."""
import glob
import os.path as osp

import pytest
import timm
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401
from mmseg_custom.utils.params import build_on_meta, count_params

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TIMM_CONFIGS = sorted(
    osp.relpath(p, osp.join(REPO, 'configs'))
    for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    if '/_base_/' not in p and '/demo/' not in p and '/custom/' not in p
    # EoMT's configs have their own tests (tests/models/test_eomt*.py): another loss, no decode.loss_ce.
    and 'eomt' not in p and ('dinov3' in p or 'vfm_benchmark' in p))


def test_the_set_the_issue_asks_for():
    expected = {f'ade20k/vitsplit/linear_dinov3_vitsplit_{s}_512_40k_ade20k.py'
                for s in ('small', 'base', 'large')}
    expected |= {f'ade20k/baselines/linear_dinov3_{k}_{s}_512_40k_ade20k.py'
                 for k in ('frozen', 'finetune') for s in ('small', 'base', 'large')}
    expected |= {'cityscapes/vitsplit/linear_dinov3_vitsplit_large_896_20k_cityscapes.py'}
    expected |= {f'pascal_context/vitsplit/linear_dinov3_vitsplit_{s}_480_20k_pascal_context_59.py'
                 for s in ('base', 'large')}
    expected |= {f'ade20k/vfm_benchmark/linear_{m}_{k}_base_512_40k_ade20k.py'
                 for m in ('dinov2', 'eva02', 'clip', 'siglip2', 'mae', 'deit3')
                 for k in ('vitsplit', 'finetune')}
    expected |= {f'ade20k/rein/linear_dinov3_rein_{s}_512_40k_ade20k.py'
                 for s in ('small', 'base', 'large')}
    assert expected == set(TIMM_CONFIGS)


@pytest.mark.parametrize('config', TIMM_CONFIGS)
def test_builds_on_meta_with_the_real_trunk(config):
    cfg = Config.fromfile(osp.join(REPO, 'configs', config))
    trunk_cfg = cfg.model.backbone.trunk
    assert trunk_cfg.type == 'TimmViT' and trunk_cfg.pretrained
    groups = count_params(build_on_meta(cfg))
    dim = cfg.model.decode_head.in_channels
    trunk = timm.create_model(trunk_cfg.name, pretrained=False, num_classes=0, device='meta')
    assert trunk.embed_dim == dim
    if 'vitsplit' in config or 'frozen' in config or '/rein/' in config:
        assert groups['backbone.trunk']['trainable'] == 0
    else:
        assert groups['backbone.trunk']['trainable'] == groups['backbone.trunk']['total']
    # The images are normalised as the weights were trained (timm's pretrained_cfg, in 0-255).
    pre = timm.models.get_pretrained_cfg(trunk_cfg.name) or trunk.pretrained_cfg
    for ours, theirs in ((cfg.model.data_preprocessor.mean, pre.mean),
                         (cfg.model.data_preprocessor.std, pre.std)):
        assert ours == pytest.approx([255 * v for v in theirs], abs=0.01), config


@pytest.mark.parametrize('config', TIMM_CONFIGS)
def test_trains_one_tiny_step(config):
    """The config with a narrow trunk (dim 64, its real depth and block choices), random weights:
    forward + backward on a tiny image; the frozen parts get no gradient."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    cfg = Config.fromfile(osp.join(REPO, 'configs', config))
    init_default_scope('mmseg')
    backbone = cfg.model.backbone
    backbone.trunk.pretrained = None
    backbone.trunk.model_kwargs = dict(embed_dim=64, num_heads=2)
    if 'channels' in backbone:
        backbone.channels = 64
    cfg.model.decode_head.update(in_channels=64, channels=64)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    model.train()
    x = torch.randn(2, 3, 50, 66)
    num_classes = cfg.model.decode_head.num_classes
    samples = [SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, num_classes, (1, 50, 66))))
               for _ in range(2)]
    losses = model.loss(x, samples)
    losses['decode.loss_ce'].backward()
    assert torch.isfinite(losses['decode.loss_ce'])
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert any(n.startswith('decode_head.') for n in trained)
    trunk_trained = {n for n in trained if n.startswith('backbone.trunk.')}
    if 'vitsplit' in config:
        assert not trunk_trained and any(n.startswith('backbone.task_head.') for n in trained)
    elif 'frozen' in config:
        assert not trunk_trained
    elif '/rein/' in config:  # frozen trunk, the Reins after every block learn
        assert not trunk_trained
        assert {'backbone.reins.learnable_tokens_a', 'backbone.reins.learnable_tokens_b',
                'backbone.reins.scale'} <= trained
    else:  # full fine-tuning: every trunk block learns
        assert {f'backbone.trunk.model.blocks.{i}' for i in range(model.backbone.trunk.num_layers)
                } <= {'.'.join(n.split('.')[:5]) for n in trunk_trained}


def test_timm_dinov2_base_counts_as_our_dinov2_base():
    """ViT-Split-B through timm's DINOv2-B trains exactly the parameters of ours on DINOv2-B."""
    def groups(config):
        return count_params(build_on_meta(Config.fromfile(osp.join(REPO, 'configs', config))))
    timm_side = groups('ade20k/vfm_benchmark/linear_dinov2_vitsplit_base_512_40k_ade20k.py')
    ours = groups('ade20k/vitsplit/linear_dinov2_vitsplit_base_512_20k_ade20k.py')
    assert timm_side['all']['trainable'] == ours['all']['trainable'] == 40_514_490
    # timm keeps no mask token (D) and no classifier; the rest of the trunk is the same size.
    assert ours['backbone.trunk']['total'] - timm_side['backbone.trunk']['total'] == 768


def test_demo_trunk_dinov3():
    """`tools/demo.py --trunk dinov3` trains on a tiny DINOv3-architecture trunk: patch 16, RoPE,
    cls + 4 storage tokens, random and frozen."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('demo_tool', osp.join(REPO, 'tools', 'demo.py'))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    args = demo.parse_args(['--trunk', 'dinov3'])
    assert args.config.endswith('vitsplit_tiny_shapes_dinov3.py')
    assert demo.parse_args([]).config == demo.DEFAULT_CONFIG
    cfg = demo.build_config(args)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    trunk = model.backbone.trunk
    assert (trunk.patch_size, trunk.num_prefix_tokens, trunk.embed_dims) == (16, 5, 192)
    assert trunk.rope is not None and trunk.pretrained is None
    assert not any(p.requires_grad for p in trunk.parameters())
    tokens, grid = trunk.tokenize(torch.randn(1, 3, 112, 112))
    assert grid == (7, 7) and tokens.shape == (1, 5 + 49, 192)
