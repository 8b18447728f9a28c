# The embedded demo with ViT-Split-EoMT (issue 28): the pretrained tiny trunk of
# vitsplit_tiny_shapes_pretrained.py, frozen and run once without autograd; the task head (copies
# of blocks 3-5, at 0.1x the lr as there) carries EoMT's queries with masked attention; the prior
# head's frozen features of blocks 0-2 are added to the features the masks are read from.
# `python tools/demo.py --head eomt`. Data, pipelines, optimizer and schedule: the base's.
# The recipe stays the linear demo's: no tried change beat it (docs/methods/eomt.md#the-demo).
_base_ = ['./vitsplit_tiny_shapes_pretrained.py']
custom_imports = dict(imports=['mmseg_custom', 'mmseg_custom.models.eomt'],
                      allow_failed_imports=False)
num_classes = 6
model = dict(
    type='EoMT',
    backbone=dict(
        _delete_=True,
        type='ViTSplitEoMTEncoder',
        trunk={{_base_.model.backbone.trunk}},
        out_indices=[0, 1, 2],
        select_layers=[3, 4, 5]),
    decode_head=dict(
        _delete_=True,
        type='EoMTHead',
        num_classes=num_classes,
        num_queries=16,  # 6 classes, one mask each per image: 16 queries leave room to spare
        num_blocks=3,  # the queries run in all three task-head blocks (as the ADE20K configs)
        masked_attn=True,
        # The official loss and matcher (../_base_/models/eomt_dinov2.py).
        loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                      reduction='mean', class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean',
                       loss_weight=5.0),
        loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True,
                       reduction='mean', naive_dice=True, eps=1.0, loss_weight=5.0),
        train_cfg=dict(
            # The official 12544 points per 512 px crop, scaled to the 112 px crop's area.
            num_points=600, oversample_ratio=3.0, importance_sample_ratio=0.75,
            assigner=dict(type='mmdet.HungarianAssigner', match_costs=[
                dict(type='mmdet.ClassificationCost', weight=2.0),
                dict(type='mmdet.CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0)]))),
    test_cfg=dict(mode='whole'))
# Mask annealing, one window per query block, proportional to the schedule: the official EoMT-L
# ADE20K windows (6520 iterations each from 6520 on, of 40000: 16.3 % of the schedule each) at the
# demo's 2000 iterations. tools/demo.py --iters scales them with the rest of the schedule.
custom_hooks = [
    dict(type='SegLabelCheckHook'),
    dict(type='EoMTMaskAnnealingHook', start_iters=[326, 652, 978], end_iters=[652, 978, 1304]),
]
