# Embedded demo: a tiny ViT-Split (DINOv2 architecture, dim 192, depth 6, random frozen trunk)
# learns the synthetic shapes data set on a CPU in minutes. Run it with `python tools/demo.py`,
# which writes the data set first; `tools/train.py` works too once the data exists. The same
# demo on a pretrained tiny trunk: vitsplit_tiny_shapes_pretrained.py (`--trunk dinov2-pretrained`).
_base_ = [
    '../_base_/models/vitsplit_linear.py', '../_base_/schedules/vitsplit_40k.py',
    '../_base_/default_runtime.py'
]
crop_size = (112, 112)
num_classes = 6
max_iters = 2000  # ~6.5 min on a 2-core CPU (0.19 s a step), val mIoU ~90 % (measured)
warmup_iters = 100

model = dict(
    type='EncoderDecoder',  # 112 px images: whole-image inference, no sliding
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        # Random trunk: the demo downloads nothing. img_size 112: the position embedding is the
        # demo's 8x8 grid, the trunk tools/pretrain_tiny_trunk.py pretrains from this config.
        trunk=dict(
            _delete_=True,
            type='DINOv2',
            arch=dict(embed_dims=192, depth=6, num_heads=3, ffn_type='mlp'),
            patch_size=14,
            img_size=112,
            num_register_tokens=0,
            pretrained=None),
        # Three task-head blocks learned fastest per second on 2 CPU cores (2, 4: slower; measured).
        out_indices=[0, 1, 2],
        select_layers=[3, 4, 5],
        channels=192),
    decode_head=dict(
        in_channels=192, channels=192, num_classes=num_classes,
        norm_cfg=dict(type='BN', requires_grad=True),
        dropout_ratio=0.0,  # a short schedule: dropout only slowed learning (measured)
        checkpoint_upsample=False),  # memory is no concern at 112 px; recomputing costs ~15%
    test_cfg=dict(_delete_=True, mode='whole'))

# ---- data ----
dataset_type = 'SyntheticShapesDataset'
data_root = 'data/demo_shapes'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# tools/test.py --tta: mmseg's multi-scale + flip test-time augmentation of the 112 px images.
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale_factor=r, keep_ratio=True)
             for r in [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]],
            [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
             dict(type='RandomFlip', prob=1.0, direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]
# No loader processes: on 2 cores they take CPU from the two compute threads (a step took 240 ms
# with 2 workers, 226 ms without; loading 8 small PNGs in the main process costs ~10 ms).
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,  # all images are 112x112: they batch without padding
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ---- schedule: the ViT-Split recipe, shortened ----
optim_wrapper = dict(
    # beta2 0.99: Adam's second moment adapts within a short schedule (higher lrs were worse).
    optimizer=dict(lr=1e-3, betas=(0.9, 0.99)),
    # The task head starts from random blocks here, not pretrained ones: full lr.
    paramwise_cfg=dict(custom_keys={'backbone.task_head': dict(lr_mult=1.0)}))
param_scheduler = [
    dict(type='PolyLRWithWarmup', power=0.9, eta_min=0.0, warmup_iters=warmup_iters,
         warmup_ratio=1e-3, by_epoch=False, begin=0, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=500)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1, save_best=None))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
