"""SyncBN -> BN where SyncBN cannot run: weights kept, one log line."""
import logging
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS
from torch import nn

from mmseg_custom.engine import revert_sync_bn_if_unsupported, sync_bn_can_run

CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools', 'tiny_seg_config.py')


@pytest.fixture
def sync_bn_model():
    """The tiny test config's UNet + FCN head, SyncBN in backbone and head, with trained-looking
    statistics."""
    cfg = Config.fromfile(CONFIG)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    with torch.no_grad():
        for i, m in enumerate(m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
            m.running_mean.fill_(0.1 * i)
            m.running_var.fill_(1.0 + i)
    return model


@pytest.mark.parametrize('gpu, where', [(False, 'no GPU'), (True, 'a single process')])
def test_sync_bn_is_replaced_once_with_weights_kept(sync_bn_model, caplog, monkeypatch, gpu,
                                                    where):
    # Both machines are simulated, so the message checked does not depend on this one's GPUs.
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: gpu)
    before = {name: t.clone() for name, t in sync_bn_model.state_dict().items()}
    sync_bns = [n for n, m in sync_bn_model.named_modules() if isinstance(m, nn.SyncBatchNorm)]
    assert any(n.startswith('backbone') for n in sync_bns)
    assert any(n.startswith('decode_head') for n in sync_bns)

    logger = logging.getLogger('test_sync_bn')
    with caplog.at_level(logging.INFO, logger='test_sync_bn'):
        model = revert_sync_bn_if_unsupported(sync_bn_model, world_size=1, logger=logger)
    assert [r.getMessage() for r in caplog.records] == [
        f'Replaced {len(sync_bns)} SyncBN layers by BN: SyncBN needs several GPU processes, '
        f'this run has {where}.'
    ]
    modules = dict(model.named_modules())
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in modules.values())
    assert all(isinstance(modules[n], nn.modules.batchnorm._BatchNorm) for n in sync_bns)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    model.train()
    model.backbone(torch.rand(2, 3, 32, 32))  # trains on CPU


def test_nothing_is_logged_without_sync_bn(caplog):
    logger = logging.getLogger('test_sync_bn')
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with caplog.at_level(logging.INFO, logger='test_sync_bn'):
        assert revert_sync_bn_if_unsupported(model, world_size=1, logger=logger) is model
    assert not caplog.records


def test_sync_bn_is_kept_where_it_can_run(sync_bn_model, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert sync_bn_can_run(2) and not sync_bn_can_run(1)
    model = revert_sync_bn_if_unsupported(sync_bn_model, world_size=2)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
