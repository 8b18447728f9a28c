# Rein's recipe (official configs/dinov2/rein_dinov2_mask2former_512x512_bs1x4.py): AdamW 1e-4,
# weight decay 0.05 (none on norms, embeddings, tokens and the Reins scale), poly decay over 40k
# iterations. Only trainable parameters reach the optimizer (PEFTOptimWrapperConstructor).
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='PEFTOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.0),
            'query_embed': embed_multi,
            'level_embed': embed_multi,
            'learnable_tokens': embed_multi,
            'reins.scale': embed_multi,
        },
        norm_decay_mult=0.0))
max_iters = 40000
param_scheduler = [
    dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
