# Rein-L on ADE20K with ViT-Split's linear head and recipe, crop 512, beside
# ../vitsplit/linear_dinov2_vitsplit_large_512_20k_ade20k.py for a like-for-like comparison:
# the same DINOv2 trunk (patch 14, frozen), LoRA Reins after every block (no query linking: no
# Mask2Former), the last block's refined patch tokens into the same ConvUpsampleLinearBNHead.
# Total batch 2 x 4 GPUs = 8, 40k iters, lr 2e-4 (ViT-Split-L's).
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
        trunk=dict(type='DINOv2', arch='large', num_register_tokens=0, pretrained='large'),
        reins=dict(type='LoRAReins', token_length=100, lora_dim=16, link_token_to_query=False),
        out_indices=[23]),
    decode_head=dict(in_channels=1024, channels=1024, num_classes=150),
    test_cfg=dict(crop_size=crop_size, stride=(341, 341)))
optim_wrapper = dict(optimizer=dict(lr=2e-4))
train_dataloader = dict(batch_size=2)
