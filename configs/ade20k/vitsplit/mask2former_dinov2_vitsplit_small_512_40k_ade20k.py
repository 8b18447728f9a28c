# ViT-Split-S with a Mask2Former head on ade20k, crop 512: total batch 2 x 8 GPUs = 16, 40k iters.
# The single stride-14 map of ViT-Split goes through a simple feature pyramid (4 levels, strides
# 3.5 to 28) into mmseg's Mask2FormerHead, whose pixel decoder runs mmseg_custom's deformable
# attention (compiled kernels on GPU and CPU, see ops/). Head and losses as mmseg's Mask2Former
# configs; optimiser as Mask2Former (AdamW 1e-4, decay 0.05, grad clip 0.01) on the ViT-Split
# schedule (task head at 0.1x lr, warm-up, poly).
# The backbone, data, runtime and schedule are the linear ViT-Split-S config's; only the head differs.
_base_ = ['./linear_dinov2_vitsplit_small_512_20k_ade20k.py']
# The pixel decoder needs mmdet: registered only for the configs that use it.
custom_imports = dict(
    imports=['mmseg_custom', 'mmseg_custom.models.decode_heads.mask2former_pixel_decoder'],
    allow_failed_imports=False)
num_classes = 150
channels = 384  # ViT-Split's output channels (the trunk's width)
model = dict(
    neck=dict(
        type='SimpleFeaturePyramid',
        in_channels=channels,
        out_channels=256,
        scale_factors=(4, 2, 1, 0.5)),
    decode_head=dict(
        _delete_=True,
        type='Mask2FormerHead',
        in_channels=[256, 256, 256, 256],
        feat_channels=256,
        out_channels=256,
        num_classes=num_classes,
        num_queries=100,
        num_transformer_feat_level=3,
        align_corners=False,
        pixel_decoder=dict(
            type='MSDAPixelDecoder',  # mmdet's MSDeformAttnPixelDecoder on mmseg_custom.ops
            num_outs=3,
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(
                num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=256,
                        num_heads=8,
                        num_levels=3,
                        num_points=4,
                        im2col_step=64,
                        dropout=0.0,
                        batch_first=True,
                        norm_cfg=None,
                        init_cfg=None),
                    ffn_cfg=dict(
                        embed_dims=256,
                        feedforward_channels=1024,
                        num_fcs=2,
                        ffn_drop=0.0,
                        act_cfg=dict(type='ReLU', inplace=True))),
                init_cfg=None),
            positional_encoding=dict(num_feats=128, normalize=True),
            init_cfg=None),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=128, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=9,
            layer_cfg=dict(
                self_attn_cfg=dict(
                    embed_dims=256,
                    num_heads=8,
                    attn_drop=0.0,
                    proj_drop=0.0,
                    dropout_layer=None,
                    batch_first=True),
                cross_attn_cfg=dict(
                    embed_dims=256,
                    num_heads=8,
                    attn_drop=0.0,
                    proj_drop=0.0,
                    dropout_layer=None,
                    batch_first=True),
                ffn_cfg=dict(
                    embed_dims=256,
                    feedforward_channels=2048,
                    num_fcs=2,
                    act_cfg=dict(type='ReLU', inplace=True),
                    ffn_drop=0.0,
                    dropout_layer=None,
                    add_identity=True)),
            init_cfg=None),
        loss_cls=dict(
            type='mmdet.CrossEntropyLoss',
            use_sigmoid=False,
            loss_weight=2.0,
            reduction='mean',
            class_weight=[1.0] * num_classes + [0.1]),  # last: "no object"
        loss_mask=dict(
            type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0),
        loss_dice=dict(
            type='mmdet.DiceLoss',
            use_sigmoid=True,
            activate=True,
            reduction='mean',
            naive_dice=True,
            eps=1.0,
            loss_weight=5.0),
        train_cfg=dict(
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type='mmdet.HungarianAssigner',
                match_costs=[
                    dict(type='mmdet.ClassificationCost', weight=2.0),
                    dict(type='mmdet.CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                    dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0)
                ]),
            sampler=dict(type='mmdet.MaskPseudoSampler'))))

no_decay = dict(lr_mult=1.0, decay_mult=0.0)
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.05, eps=1e-8),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={  # merged with the schedule's (task head at 0.1x lr)
            'query_embed': no_decay,
            'query_feat': no_decay,
            'level_embed': no_decay,
        },
        norm_decay_mult=0.0))
