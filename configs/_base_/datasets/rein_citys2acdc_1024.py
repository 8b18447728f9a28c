# Rein's Cityscapes -> ACDC benchmark at crop 1024 (official
# configs/_base_/datasets/dg_citys2acdc_1024x1024.py with the training pipeline of its 1024
# config): train on Cityscapes; validate on ACDC fog / night / rain / snow val and Cityscapes val,
# each domain separately (DGIoUMetric; mean_mIoU over the four ACDC conditions). The ACDC test
# split has no public labels: test writes the predictions for the benchmark server.
# Folders: data/cityscapes (mmseg layout), data/acdc (rgb_anon/<condition>/<split>,
# gt/<condition>/<split>).
crop_size = (1024, 1024)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomChoiceResize', scales=[int(1024 * x * 0.1) for x in range(5, 21)],
         resize_type='ResizeShortestEdge', max_size=4096),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
acdc_val_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1920, 1080), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
acdc_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1920, 1080), keep_ratio=True),
    dict(type='PackSegInputs'),
]
# One image (tools/image_demo.py, mmseg.apis.inference_model): ACDC's scale.
test_pipeline = acdc_val_pipeline
conditions = ['night', 'snow', 'fog', 'rain']  # the official order
val_acdc = [
    dict(type='ACDCDataset', data_root='data/acdc/',
         data_prefix=dict(img_path=f'rgb_anon/{c}/val', seg_map_path=f'gt/{c}/val'),
         pipeline=acdc_val_pipeline) for c in conditions
]
test_acdc = [
    dict(type='ACDCDataset', data_root='data/acdc/',
         data_prefix=dict(img_path=f'rgb_anon/{c}/test', seg_map_path=f'gt/{c}/test'),
         pipeline=acdc_test_pipeline) for c in conditions
]
val_cityscapes = dict(
    type='CityscapesDataset', data_root='data/cityscapes/',
    data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
    pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs'),
    ])
train_dataloader = dict(
    batch_size=2,  # per GPU; the official runs 4 GPUs: total batch 8
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='CityscapesDataset', data_root='data/cityscapes/',
                 data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ConcatDataset', datasets=val_acdc + [val_cityscapes]))
test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ConcatDataset', datasets=test_acdc))
val_evaluator = dict(
    type='DGIoUMetric',
    iou_metrics=['mIoU'],
    dataset_keys=['night/', 'cityscapes/', 'fog/', 'snow/', 'rain/'],
    mean_used_keys=['night/', 'fog/', 'snow/', 'rain/'])
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'], format_only=True,
                      output_dir='work_dirs/format_results')
