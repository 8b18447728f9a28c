# ViT-Split with a DINOv2 trunk and the linear upsampling head (SPEC sections 2-3).
# Size-specific configs override trunk.arch, out_indices, select_layers and channels.
norm_cfg = dict(type='SyncBN', requires_grad=True)  # becomes BN where SyncBN cannot run
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='BatchedSlideEncoderDecoder',  # mmseg's EncoderDecoder, slide crops run in batches
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ViTSplit',
        trunk=dict(type='DINOv2', arch='small', num_register_tokens=0, pretrained='small'),
        out_indices=[2, 5, 8, 11],
        select_layers=[9, 10, 11],
        channels=384),
    decode_head=dict(
        type='ConvUpsampleLinearBNHead',
        in_channels=384,
        channels=384,
        dropout_ratio=0,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    # crop_batch: BatchedSlideEncoderDecoder's default (4 crops at a time on a GPU, 1 on the CPU).
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
