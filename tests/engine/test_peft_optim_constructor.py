"""The optimizer constructors leave the model's mode alone and log a few summary lines, not one
per frozen module or per parameter option."""
import importlib.util
import logging
import os.path as osp
import uuid

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from torch import nn

import mmseg_custom  # noqa: F401

_spec = importlib.util.spec_from_file_location(  # the configs' toy-width builder
    'tiny_models', osp.join(osp.dirname(osp.dirname(__file__)), 'configs', 'tiny_models.py'))
tiny_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_models)
CONSTRUCTORS = ['FrozenAwareOptimWrapperConstructor', 'PEFTOptimWrapperConstructor']


class ModeRecorder(nn.Module):

    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(2, 2).requires_grad_(False)
        self.head = nn.Linear(2, 2)
        self.modes = []

    def train(self, mode=True):
        self.modes.append(mode)
        return super().train(mode)


@pytest.mark.parametrize('constructor', CONSTRUCTORS)
def test_building_the_optimizer_leaves_the_model_mode_alone(constructor):
    model = ModeRecorder().eval()
    model.modes.clear()
    optim = build_optim_wrapper(model, dict(
        constructor=constructor, optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        paramwise_cfg=dict(norm_decay_mult=0.0)))
    assert model.modes == [] and not model.training
    optimized = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert {id(p) for p in model.head.parameters()} <= optimized


class Lines(logging.Handler):

    def __init__(self):
        super().__init__(logging.INFO)  # what a run logs at mmengine's default level
        self.lines = []

    def emit(self, record):
        self.lines.extend(record.getMessage().splitlines())


def build_logged(config):
    """The optimizer of ``config`` at toy width, and the lines logged while building it."""
    cfg = tiny_models.tiny_config(config)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    logger = MMLogger.get_instance(f'optim-{uuid.uuid4().hex}', log_level='INFO')
    assert MMLogger.get_current_instance() is logger
    handler = Lines()
    logger.addHandler(handler)
    try:
        optim = build_optim_wrapper(model, cfg.optim_wrapper)
    finally:
        logger.removeHandler(handler)
    return model, optim, handler.lines


@pytest.mark.parametrize('config', [
    'ade20k/peft/linear_dinov2_lora_small_512_40k_ade20k.py',  # frozen leaves in a LoRA trunk
    'gtav/rein/mask2former_dinov2_rein_large_512_40k_gtav.py',  # options on ~300 parameters
])
def test_optimizer_build_logs_a_few_summary_lines(config):
    model, optim, lines = build_logged(config)
    assert 2 <= len(lines) <= 8, '\n'.join(lines)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert f'backbone.trunk: {frozen:,} frozen parameters, not optimized' in lines
    # One line per param group, with its lr, weight decay and size.
    groups = [ln for ln in lines if ln.startswith('param group ')]
    assert len(groups) == len(optim.optimizer.param_groups)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sizes = [int(ln.split(' tensors, ')[1].split(' parameters')[0].replace(',', ''))
             for ln in groups]
    assert sum(sizes) == trainable
    for ln, group in zip(groups, optim.optimizer.param_groups):
        assert f"lr={group['lr']:g}" in ln and f"weight_decay={group['weight_decay']:g}" in ln
