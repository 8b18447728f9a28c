# VFM benchmark: ViT-Split-B on SigLIP2-B/16 through timm, ade20k, crop 512, 40k iters, total
# batch 2 x 4 GPUs. Blocks as ViT-Split-B on DINOv2-B (depth 12). Weights: timm's hub file.
_base_ = [
    '../../_base_/models/vitsplit_linear_timm.py', '../../_base_/datasets/ade20k_512.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
]
crop_size = (512, 512)
# SigLIP's normalisation (timm's pretrained_cfg: 0.5, 0.5), not ImageNet's.
model = dict(
    data_preprocessor=dict(size=crop_size, mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    backbone=dict(
        out_indices=[2, 5, 8, 11],
        trunk=dict(name='vit_base_patch16_siglip_224.v2_webli', pretrained='timm'),
        select_layers=[9, 10, 11],
        channels=768),
    decode_head=dict(in_channels=768, channels=768, num_classes=150),
    test_cfg=dict(crop_size=crop_size, stride=(341, 341)))
optim_wrapper = dict(optimizer=dict(lr=0.0002))
train_dataloader = dict(batch_size=2)
