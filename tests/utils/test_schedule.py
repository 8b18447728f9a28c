"""scale_schedule: scheduler ranges and warm-ups (numbers and tuples), hook windows, intervals."""
from mmengine.config import Config

from mmseg_custom.utils.schedule import scale_schedule


def eomt_like_config():
    return Config(dict(
        train_cfg=dict(max_iters=40000, val_interval=4000),
        param_scheduler=[
            dict(type='TwoStageWarmupPolyLR', warmup_iters=(500, 1000), begin=0, end=40000),
            dict(type='PolyLRWithWarmup', warmup_iters=1500, begin=0, end=40000),
            dict(type='LinearLR', warmup_iters=[0, 400], begin=0, end=400)],
        custom_hooks=[
            dict(type='SegLabelCheckHook'),
            dict(type='EoMTMaskAnnealingHook', start_iters=[6520, 13040, 19560, 26080],
                 end_iters=[13040, 19560, 26080, 32600]),
            dict(type='SomeWindowHook', start_iters=0, end_iters=8000)],
        default_hooks=dict(checkpoint=dict(interval=4000), logger=dict(interval=50))))


def test_scale_schedule_scales_tuple_warmups_and_hook_windows():
    cfg = eomt_like_config()
    scale_schedule(cfg, 2000)  # 1/20
    two_stage, poly, linear = cfg.param_scheduler
    assert tuple(two_stage.warmup_iters) == (25, 50) and two_stage.end == 2000
    assert poly.warmup_iters == 75 and poly.begin == 0
    assert list(linear.warmup_iters) == [0, 20] and linear.end == 20  # 0 stays 0
    check, anneal, window = cfg.custom_hooks
    assert check == dict(type='SegLabelCheckHook')
    assert list(anneal.start_iters) == [326, 652, 978, 1304]
    assert list(anneal.end_iters) == [652, 978, 1304, 1630]
    assert (window.start_iters, window.end_iters) == (0, 400)
    assert cfg.train_cfg.max_iters == 2000 and cfg.train_cfg.val_interval == 200
    assert cfg.default_hooks.checkpoint.interval == 200


def test_scale_schedule_to_a_few_iterations_keeps_windows_ordered_and_positive():
    cfg = eomt_like_config()
    scale_schedule(cfg, 2)
    anneal = cfg.custom_hooks[1]
    starts, ends = list(anneal.start_iters), list(anneal.end_iters)
    assert all(1 <= s <= e <= 2 for s, e in zip(starts, ends)), (starts, ends)
    assert starts == sorted(starts) and ends == sorted(ends)
    assert tuple(cfg.param_scheduler[0].warmup_iters) == (1, 1)
    # the annealing built from such windows runs: 1 before the start, 0 from the end on
    from mmseg_custom.models.eomt.head import mask_annealing
    assert [mask_annealing(s, e, 2) for s, e in zip(starts, ends)] == [0.0] * 4


def test_scale_schedule_of_the_eomt_demo_config():
    import os.path as osp
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(repo, 'configs', 'demo',
                                   'vitsplit_eomt_tiny_shapes_pretrained.py'))
    scale_schedule(cfg, 1000)  # the demo's 2000 halved
    (anneal, ) = [h for h in cfg.custom_hooks if h.type == 'EoMTMaskAnnealingHook']
    assert list(anneal.start_iters) == [163, 326, 489]
    assert list(anneal.end_iters) == [326, 489, 652]
