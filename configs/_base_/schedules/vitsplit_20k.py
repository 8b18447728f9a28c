_base_ = ['./vitsplit_40k.py']
max_iters = 20000
# The original's mmcv 1.x poly + linear warm-up: decay from iteration 0, warm-up scaling it.
param_scheduler = [
    dict(type='PolyLRWithWarmup', power=0.9, eta_min=0.0, warmup_iters=1500, warmup_ratio=1e-6,
         by_epoch=False, begin=0, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=2000)
default_hooks = dict(checkpoint=dict(interval=2000))
