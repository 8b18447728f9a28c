# The ViT-Split recipe (SPEC section 4): AdamW, task head at 0.1x lr, poly decay scaled by a
# 1500-iter linear warm-up from 1e-6 x lr (below). Configs set the base lr. fused=True: torch's
# single-kernel AdamW, the same update (to float rounding), ~20x faster than the per-tensor loop
# on CPU.
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='FrozenAwareOptimWrapperConstructor',  # the frozen trunk: one log line, not 200
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.01, fused=True),
    paramwise_cfg=dict(custom_keys={'backbone.task_head': dict(lr_mult=0.1)}))
max_iters = 40000
# The original's mmcv 1.x poly + linear warm-up: decay from iteration 0, warm-up scaling it.
param_scheduler = [
    dict(type='PolyLRWithWarmup', power=0.9, eta_min=0.0, warmup_iters=1500, warmup_ratio=1e-6,
         by_epoch=False, begin=0, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=4000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000, max_keep_ckpts=2,
                    save_best='mIoU'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
