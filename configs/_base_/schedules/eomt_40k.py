# The official EoMT recipe: AdamW (lr 1e-4, weight decay 0.05 on everything), layer-wise lr decay
# 0.8 per trunk block, the two-stage warm-up (the new parts over 500 iterations, then the encoder
# over 1000) and poly 0.9 decay, 40k iterations (the official ADE20K run: 31 epochs at batch 16).
# The mask annealing windows are the experiment configs' (custom_hooks).
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='EoMTOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05, fused=True),
    paramwise_cfg=dict(layer_decay=0.8),
    clip_grad=None)
max_iters = 40000
param_scheduler = [
    dict(type='TwoStageWarmupPolyLR', warmup_iters=(500, 1000), power=0.9, by_epoch=False,
         begin=0, end=max_iters),
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
