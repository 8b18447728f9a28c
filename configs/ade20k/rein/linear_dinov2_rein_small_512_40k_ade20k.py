# Rein-S on ADE20K with ViT-Split's linear head and recipe, crop 512, beside
# ../vitsplit/linear_dinov2_vitsplit_small_512_20k_ade20k.py for a like-for-like comparison:
# the same DINOv2 trunk (patch 14, frozen), LoRA Reins after every block (no query linking: no
# Mask2Former), the last block's refined patch tokens into the same ConvUpsampleLinearBNHead.
# Total batch 2 x 4 GPUs = 8, 40k iters. Optimizer and schedule: ViT-Split's, not Rein's
# (../../_base_/schedules/vitsplit_40k.py: AdamW lr 3e-4 as ViT-Split-S, weight decay 0.01 on every
# trainable parameter, the Reins' learnable tokens and scale and the norms included, 1500-iter
# warm-up then poly). Rein's own: ./linear_dinov2_rein_small_512_40k_ade20k_rein_recipe.py.
_base_ = [
    '../../_base_/models/vitsplit_linear.py', '../../_base_/datasets/ade20k_512.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
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
optim_wrapper = dict(optimizer=dict(lr=3e-4))
train_dataloader = dict(batch_size=2)
