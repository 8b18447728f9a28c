# Cityscapes as EoMT trains it (tue-mps/eomt configs/dinov2/cityscapes/semantic/): cityscapes_896.py
# with a 1024 crop and 4 images per GPU (total batch 4 x 4 GPUs = 16).
_base_ = ['./cityscapes_896.py']
crop_size = (1024, 1024)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))
