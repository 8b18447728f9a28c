"""The shipped schedules give the original's lr curve: mmcv 1.x poly with linear warm-up."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import PARAM_SCHEDULERS

import mmseg_custom  # noqa: F401 (registers PolyLRWithWarmup)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def mmcv1_poly_linear_warmup(base_lr, it, max_iters, power=0.9, min_lr=0.0, warmup_iters=1500,
                             warmup_ratio=1e-6):
    """The lr mmcv 1.x's PolyLrUpdaterHook sets before iteration ``it`` (``runner.iter``) with
    ``warmup='linear'``, ``by_epoch=False``: ``get_regular_lr``, scaled in ``get_warmup_lr``."""
    regular = (base_lr - min_lr) * (1 - it / max_iters)**power + min_lr
    if it >= warmup_iters:
        return regular
    k = (1 - it / warmup_iters) * (1 - warmup_ratio)
    return regular * (1 - k)


def lr_curve(param_scheduler, base_lrs, iters):
    """lr of each param group at each iteration, stepping as mmengine's ParamSchedulerHook does
    (after every training iteration)."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    optimizer = torch.optim.SGD([dict(params=[p], lr=lr) for p, lr in zip(params, base_lrs)])
    schedulers = [PARAM_SCHEDULERS.build(dict(cfg, optimizer=optimizer))
                  for cfg in param_scheduler]
    curve = []
    for _ in range(iters):
        curve.append([group['lr'] for group in optimizer.param_groups])
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    return curve, optimizer, schedulers


# The original recipe (SPEC section 4; the original configs' lr_config): power 0.9, min_lr 0,
# 1500 warm-up iterations from 1e-6; ADE20K 40k iterations, Pascal Context 20k.
@pytest.mark.parametrize('config, lr, max_iters', [
    ('ade20k/vitsplit/linear_dinov2_vitsplit_small_512_20k_ade20k.py', 3e-4, 40000),
    ('pascal_context/vitsplit/linear_dinov2_vitsplit_base_480_20k_pascal_context_59.py', 1e-4,
     20000),
])
def test_shipped_schedule_is_mmcv1_poly_with_linear_warmup(config, lr, max_iters):
    cfg = Config.fromfile(osp.join(REPO, 'configs', config))
    assert cfg.optim_wrapper.optimizer.lr == lr and cfg.train_cfg.max_iters == max_iters
    base_lrs = [lr, lr * 0.1]  # the task head's group runs at 0.1x
    curve, _, _ = lr_curve(cfg.param_scheduler, base_lrs, max_iters)
    for it in (0, 1, 10, 749, 1499, 1500, 1501, 3000, max_iters // 2, max_iters - 2,
               max_iters - 1):
        for got, base in zip(curve[it], base_lrs):
            expected = mmcv1_poly_linear_warmup(base, it, max_iters)
            assert got == pytest.approx(expected, rel=1e-6, abs=0), f'iteration {it}'


def test_demo_schedule_keeps_its_warmup():
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'vitsplit_tiny_shapes.py'))
    (sched, ) = cfg.param_scheduler
    lr, max_iters = cfg.optim_wrapper.optimizer.lr, cfg.train_cfg.max_iters
    curve, _, _ = lr_curve(cfg.param_scheduler, [lr], max_iters)
    for it in (0, 50, 99, 100, 1000, max_iters - 1):
        expected = mmcv1_poly_linear_warmup(lr, it, max_iters, warmup_iters=sched.warmup_iters,
                                            warmup_ratio=sched.warmup_ratio)
        assert curve[it][0] == pytest.approx(expected, rel=1e-6, abs=0), f'iteration {it}'


def test_resumed_schedule_continues_the_curve():
    cfg = [dict(type='PolyLRWithWarmup', warmup_iters=20, end=100, by_epoch=False)]
    full, _, _ = lr_curve(cfg, [1.0], 100)
    _, optimizer, (scheduler, ) = lr_curve(cfg, [1.0], 37)
    states = optimizer.state_dict(), scheduler.state_dict()
    param = torch.nn.Parameter(torch.zeros(1))
    resumed_opt = torch.optim.SGD([param], lr=1.0)
    resumed = PARAM_SCHEDULERS.build(dict(cfg[0], optimizer=resumed_opt))
    resumed_opt.load_state_dict(states[0])
    resumed.load_state_dict(states[1])
    for it in range(37, 100):  # the runner resumes after iteration 37's step
        assert resumed_opt.param_groups[0]['lr'] == pytest.approx(full[it][0], rel=1e-12)
        resumed_opt.step()
        resumed.step()


def test_schedule_needs_its_end():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match='needs end'):
        PARAM_SCHEDULERS.build(dict(type='PolyLRWithWarmup', optimizer=optimizer))
