"""Every Rein / PEFT config builds, with random weights, and trains one tiny step on the CPU."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_custom  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(osp.relpath(p, osp.join(REPO, 'configs')) for pattern in ('rein', 'peft')
                 for p in glob.glob(osp.join(REPO, 'configs', '*', pattern, '*.py')))


def test_every_rein_and_peft_config_is_listed():
    assert len(CONFIGS) == 13, CONFIGS


# An L linear-head step takes ~50 s on a loaded 2-core CPU.
@pytest.mark.parametrize('config', [
    pytest.param(c, marks=pytest.mark.slow) if c.startswith('ade20k/rein/') and '_large_' in c else c
    for c in CONFIGS])
def test_config_trains_one_step_on_cpu(config):
    cfg = Config.fromfile(osp.join(REPO, 'configs', config))
    init_default_scope('mmseg')
    cfg.model.backbone.trunk.pretrained = None
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    optim = build_optim_wrapper(model, cfg.optim_wrapper)  # the config's constructor
    model.train()
    size = 64 if cfg.model.backbone.trunk.get('patch_size') == 16 else 56
    num_classes = cfg.model.decode_head.num_classes
    label = torch.zeros(1, size, size, dtype=torch.long)
    label[:, 8:40, 10:50] = 1
    label[:, 40:, :20] = num_classes - 1
    meta = dict(img_shape=(size, size), pad_shape=(size, size), ori_shape=(size, size))
    samples = [SegDataSample(gt_sem_seg=PixelData(data=label), metainfo=meta)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = model.loss(torch.randn(1, 3, size, size), samples)
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(loss)
    optim.update_params(loss)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert not any(n.startswith('backbone.trunk.') and '.lora_' not in n for n in trainable)
    optimized = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert optimized == {id(p) for p in model.parameters() if p.requires_grad}
