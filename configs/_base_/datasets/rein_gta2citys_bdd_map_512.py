# Rein's GTAV -> Cityscapes + BDD100K + Mapillary benchmark at crop 512 (official
# configs/_base_/datasets/dg_gta_512x512.py with the training pipeline of its 512 config): train on
# GTAV, validate on each target domain separately (DGIoUMetric: <domain>_mIoU and mean_mIoU).
# Folders as the official: data/gta (images/, labels/ *_labelTrainIds.png), data/cityscapes
# (mmseg layout), data/bdd100k (images/10k, labels/sem_seg/masks), data/mapillary (half/val_img,
# half/val_label: Cityscapes train ids, from Rein's tools/convert_datasets).
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomChoiceResize', scales=[int(512 * x * 0.1) for x in range(5, 21)],
         resize_type='ResizeShortestEdge', max_size=2048),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]

# Test: resize (keep ratio) to each domain's official scale, then slide inference.
cityscapes_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1024, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
bdd_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1280, 720), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# One image (tools/image_demo.py, mmseg.apis.inference_model): the Cityscapes scale.
test_pipeline = cityscapes_test_pipeline
val_cityscapes = dict(
    type='CityscapesDataset', data_root='data/cityscapes/',
    data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
    pipeline=cityscapes_test_pipeline)
val_bdd = dict(
    type='BDD100KDataset', data_root='data/bdd100k/',
    data_prefix=dict(img_path='images/10k/val', seg_map_path='labels/sem_seg/masks/val'),
    pipeline=bdd_test_pipeline)
val_mapillary = dict(
    type='MapillaryCityscapesDataset', data_root='data/mapillary/',
    data_prefix=dict(img_path='half/val_img', seg_map_path='half/val_label'),
    pipeline=cityscapes_test_pipeline)
train_dataloader = dict(
    batch_size=4,  # per GPU; the official runs 1 GPU: total batch 4
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='GTAVDataset', data_root='data/gta/',
                 data_prefix=dict(img_path='images', seg_map_path='labels'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ConcatDataset', datasets=[val_cityscapes, val_bdd, val_mapillary]))
test_dataloader = val_dataloader
val_evaluator = dict(type='DGIoUMetric', iou_metrics=['mIoU'],
                     dataset_keys=['citys', 'map', 'bdd'])
test_evaluator = val_evaluator
