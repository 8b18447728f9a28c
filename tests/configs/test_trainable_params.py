"""No shipped config has a trainable parameter that gets no gradient (DDP stops on one at its
second iteration): every config, at toy width (tiny_models.py), takes one training step."""
import pytest
import torch
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from tiny_models import SIZE, shipped_configs, tiny_config

import mmseg_custom  # noqa: F401


@pytest.mark.parametrize('name', shipped_configs())
def test_every_trainable_parameter_gets_a_gradient(name):
    cfg = tiny_config(name)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    model.train()
    num_classes = cfg.model.decode_head.num_classes
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, SIZE, SIZE, generator=gen)
    samples = [SegDataSample(gt_sem_seg=PixelData(
        data=torch.randint(0, num_classes, (1, SIZE, SIZE), generator=gen)),
        metainfo=dict(img_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE))) for _ in range(2)]
    loss, _ = model.parse_losses(model.loss(x, samples))
    loss.backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, name
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == [], f'{name}: trainable parameters without a gradient: {no_grad}'
