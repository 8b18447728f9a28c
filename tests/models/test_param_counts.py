"""Every shipped config builds on the meta device and its trainable count matches SPEC section 4."""
import functools
import glob
import json
import os.path as osp

import pytest
import timm
from mmengine.config import Config

import mmseg_custom  # noqa: F401
from mmseg_custom.utils.params import build_on_meta, count_params

# Trainable parameters of the original implementation (SPEC section 4). Plain ViT-Split configs
# there include the original's dead SyncBN (2*D); ours drops it.
SPEC = {
    'ade20k/vitsplit/linear_dinov2_vitsplit_small_512_20k_ade20k.py': (10_231_098, 384),
    'ade20k/vitsplit/linear_dinov2_vitsplit_base_512_20k_ade20k.py': (40_516_026, 768),
    'ade20k/vitsplit/linear_dinov2_vitsplit_large_512_20k_ade20k.py': (88_639_674, 1024),
    'ade20k/vitsplit/linear_dinov2_vitsplit_large_896_20k_ade20k.py': (88_639_674, 1024),
    'ade20k/vitsplit/linear_dinov2_vitsplit_giant_896_20k_ade20k.py': (326_530_234, 1536),
    'cityscapes/vitsplit/linear_dinov2_vitsplit_small_896_20k_cityscapes.py': (13_731_127, 384),
    'cityscapes/vitsplit/linear_dinov2_vitsplit_base_896_20k_cityscapes.py': (55_183_927, 768),
    'cityscapes/vitsplit/linear_dinov2_vitsplit_large_896_20k_cityscapes.py': (164_095_031, 1024),
    'pascal_context/vitsplit/linear_dinov2_vitsplit_base_480_20k_pascal_context_59.py': (47_535_455, 768),
    'pascal_context/vitsplit/linear_dinov2_vitsplit_large_480_20k_pascal_context_59.py': (115_840_095, 1024),
    'ade20k/vitsplit/linear_dinov2_vitsplit_sparsegate_small_512_20k_ade20k.py': (10_230_378, 0),
    'ade20k/vitsplit/linear_dinov2_vitsplit_sparsegate_base_512_20k_ade20k.py': (40_514_538, 0),
    'cityscapes/vitsplit/linear_dinov2_vitsplit_learnablegate_large_896_20k_cityscapes.py': (159_898_775, 0),
}


@pytest.mark.parametrize('config', sorted(SPEC))
def test_trainable_params_match_spec(config, repo_dir):
    expected, dead_bn_dim = SPEC[config]
    groups = count_params(build_on_meta(Config.fromfile(osp.join(repo_dir, 'configs', config))))
    assert groups['all']['trainable'] == expected - 2 * dead_bn_dim
    assert groups['backbone.trunk']['trainable'] == 0


# DINOv2's sizes (the paper's ViT-S/B/L/g): width, depth, FFN.
DINOV2 = dict(small=dict(embed_dims=384, depth=12), base=dict(embed_dims=768, depth=12),
              large=dict(embed_dims=1024, depth=24),
              giant=dict(embed_dims=1536, depth=40, ffn_type='swiglu'))


def dinov2_count(trunk):
    """Parameters of a DINOv2 trunk, from its architecture (the official ViT's layer shapes)."""
    arch = trunk.get('arch', 'small')
    arch = DINOV2[arch] if isinstance(arch, str) else arch
    d, p = arch['embed_dims'], trunk.get('patch_size', 14)
    hidden = int(d * arch.get('mlp_ratio', 4.0))
    if arch.get('ffn_type', 'mlp') == 'mlp':
        ffn = (d * hidden + hidden) + (hidden * d + d)
    else:  # fused SwiGLU: 2/3 of the hidden width, rounded up to a multiple of 8
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        ffn = (d * 2 * hidden + 2 * hidden) + (hidden * d + d)
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + ffn  # norms, attn, ls, ffn
    grid = trunk.get('img_size', 518) // p
    # cls, position embeddings (cls + grid), mask and register tokens
    tokens = 1 + (1 + grid * grid) + 1 + trunk.get('num_register_tokens', 0)
    return (3 * p * p * d + d) + tokens * d + arch['depth'] * block + 2 * d


def timm_count(trunk):
    """Parameters of timm's own model of that name, less what the trunk prunes (the head)."""
    return _timm_count(trunk.name, json.dumps(trunk.get('model_kwargs') or {}, sort_keys=True))


@functools.lru_cache(maxsize=None)  # one model per name and arguments
def _timm_count(name, model_kwargs):
    kwargs = dict(num_classes=0, dynamic_img_size=True, **json.loads(model_kwargs))
    model = timm.create_model(name, pretrained=False, device='meta', **kwargs)
    return sum(q.numel() for n, q in model.named_parameters()
               if not n.startswith(('fc_norm.', 'attn_pool.', 'head.')))


def test_every_shipped_config_builds_on_meta_with_its_trunks_size(repo_dir):
    """Each config builds, and its trunk has the parameters its architecture has (adapters that
    live inside the trunk, such as LoRA's, aside)."""
    configs = glob.glob(osp.join(repo_dir, 'configs', '**', '*.py'), recursive=True)
    configs = [c for c in configs if '_base_' not in c.split(osp.sep)]  # not base-size ones
    assert len(configs) >= len(SPEC)
    counts = dict(DINOv2=dinov2_count, TimmViT=timm_count)
    for path in configs:
        cfg = Config.fromfile(path)
        model = build_on_meta(cfg)
        trunk = cfg.model.backbone.trunk
        assert trunk.type in counts, f'{path}: no parameter count for a {trunk.type} trunk: add one'
        ours = sum(q.numel() for n, q in model.backbone.trunk.named_parameters()
                   if '.lora_' not in n)
        assert ours == counts[trunk.type](trunk), path
