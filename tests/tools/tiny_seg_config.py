# A seconds-long segmentation run for the launcher and engine tests: a 4-channel UNet with SyncBN
# (as the real configs have it) on 32x32 images, 4 iterations. tests/tools/conftest.py writes the
# data set into data/tiny_seg under the runs' working directory. Nothing is random but the seeded
# sampler (no dropout, no random augmentation), so runs repeat exactly.
custom_imports = dict(imports=['mmseg_custom'], allow_failed_imports=False)
default_scope = 'mmseg'

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', mean=[128.0] * 3, std=[64.0] * 3, bgr_to_rgb=True,
        pad_val=0, seg_pad_val=255, size=(32, 32)),
    backbone=dict(
        type='UNet', in_channels=3, base_channels=4, num_stages=3, strides=(1, 1, 1),
        enc_num_convs=(1, 1, 1), dec_num_convs=(1, 1), downsamples=(True, True),
        enc_dilations=(1, 1, 1), dec_dilations=(1, 1), norm_cfg=norm_cfg,
        upsample_cfg=dict(type='InterpConv')),
    decode_head=dict(
        type='FCNHead', in_channels=4, in_index=2, channels=4, num_convs=1, concat_input=False,
        dropout_ratio=0.0, num_classes=3, norm_cfg=norm_cfg, align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

data_root = 'data/tiny_seg'
metainfo = dict(
    classes=('background', 'red', 'green'), palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0]])
pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]

# tools/test.py --tta: three scales (the UNet needs sides divisible by 4), each also flipped.
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.75, 1.0, 1.5)],
        [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
         dict(type='RandomFlip', prob=1.0, direction='horizontal')],
        [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])
]
tta_model = dict(type='SegTTAModel')

train_dataset = dict(
    type='BaseSegDataset', data_root=data_root, metainfo=metainfo, img_suffix='.png',
    seg_map_suffix='.png', pipeline=pipeline,
    data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'))
val_dataset = dict(
    train_dataset, data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'))

train_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=train_dataset)
val_dataloader = dict(
    batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=val_dataset)
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=1e-4, begin=0, end=4, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook', interval=1))
custom_hooks = [dict(type='SegLabelCheckHook')]
env_cfg = dict(
    cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
# window_size=1: the logged loss is each iteration's own, so runs compare per iteration.
log_processor = dict(by_epoch=False, window_size=1)
log_level = 'INFO'
load_from = None
resume = False
