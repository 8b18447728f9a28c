"""tools/pretrain_tiny_trunk.py: same seed, same bytes; the trunk loads what it writes; the shipped
weights load into the demo's trunk."""
import importlib.util
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from safetensors import safe_open
from safetensors.torch import load_file

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO, 'configs', 'demo', 'vitsplit_tiny_shapes_pretrained.py')
ASSET = osp.join(REPO, 'assets', 'dinov2_tiny_pretext.safetensors')


@pytest.fixture
def tool():
    path = osp.join(REPO, 'tools', 'pretrain_tiny_trunk.py')
    spec = importlib.util.spec_from_file_location('pretrain_tiny_trunk', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def two_block_run(tool, out, seed=0):
    threads = torch.get_num_threads()
    try:
        return tool.main(['--iters', '3', '--batch', '2', '--seed', str(seed), '--threads', '1',
                          '--out', out, '--cfg-options', 'model.backbone.trunk.arch.depth=2'])
    finally:
        torch.set_num_threads(threads)


def test_same_seed_same_bytes_and_the_trunk_loads_them(tool, tmp_path):
    a = two_block_run(tool, str(tmp_path / 'a.safetensors'))
    b = two_block_run(tool, str(tmp_path / 'b.safetensors'))
    c = two_block_run(tool, str(tmp_path / 'c.safetensors'), seed=1)
    assert a['sha256'] == b['sha256'] != c['sha256']

    saved = load_file(a['path'])
    assert all(v.dtype == torch.float16 for v in saved.values())
    init_default_scope('mmseg')
    trunk_cfg = Config.fromfile(DEMO).model.backbone.trunk
    trunk_cfg.arch.depth = 2
    trunk_cfg.pretrained = a['path']
    trunk = MODELS.build(trunk_cfg)
    trunk.init_weights()
    state = trunk.state_dict()
    assert set(state) == set(saved)
    assert all(torch.equal(state[k], saved[k].float()) for k in saved)
    # trained, not the initialisation: the patch embedding moved away from a fresh one's
    fresh = MODELS.build(dict(trunk_cfg, pretrained=None))
    fresh.init_weights()
    assert not torch.equal(fresh.blocks[0].attn.qkv.weight, state['blocks.0.attn.qkv.weight'])


def test_bad_output_name_and_blocks_fail_before_any_work(tool, tmp_path):
    with pytest.raises(ValueError, match='safetensors'):
        tool.main(['--out', str(tmp_path / 'w.pth')])
    with pytest.raises(ValueError, match=r'--supervise \[7\]'):
        tool.main(['--out', str(tmp_path / 'w.safetensors'), '--supervise', '7'])


def test_shipped_weights_load_into_the_demo_trunk():
    assert osp.getsize(ASSET) <= 10 * 2**20
    init_default_scope('mmseg')
    cfg = Config.fromfile(DEMO)
    assert osp.samefile(cfg.model.backbone.trunk.pretrained, ASSET)
    trunk = MODELS.build(cfg.model.backbone.trunk)
    trunk.init_weights()  # strict: every key of the trunk, nothing else
    with safe_open(ASSET, 'pt') as f:
        meta = f.metadata()
        assert torch.equal(trunk.pos_embed, f.get_tensor('pos_embed').float())
    settings = json.loads(meta['pretrain'])
    assert settings['config'] == 'configs/demo/vitsplit_tiny_shapes.py' and settings['seed'] == 0
