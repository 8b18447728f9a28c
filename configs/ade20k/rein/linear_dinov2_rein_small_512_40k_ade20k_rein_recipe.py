# Rein-S on ADE20K with ViT-Split's linear head and data and Rein's own optimizer and schedule
# (../../_base_/schedules/rein_40k.py, as the official configs/dinov2/
# rein_dinov2_mask2former_512x512_bs1x4.py: AdamW lr 1e-4, weight decay 0.05 except on norms, the
# Reins' learnable tokens and scale; poly decay, no warm-up; PEFTOptimWrapperConstructor).
# Otherwise as ./linear_dinov2_rein_small_512_40k_ade20k.py, which trains with ViT-Split's recipe.
# Total batch 2 x 4 GPUs = 8, 40k iters.
_base_ = [
    '../../_base_/models/vitsplit_linear.py', '../../_base_/datasets/ade20k_512.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/rein_40k.py'
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='ReinBackbone',
        trunk=dict(type='DINOv2', arch='small', num_register_tokens=0, pretrained='small'),
        reins=dict(type='LoRAReins', token_length=100, lora_dim=16, link_token_to_query=False),
        out_indices=[11]),
    decode_head=dict(in_channels=384, channels=384, num_classes=150),
    test_cfg=dict(crop_size=crop_size, stride=(341, 341)))
train_dataloader = dict(batch_size=2)
