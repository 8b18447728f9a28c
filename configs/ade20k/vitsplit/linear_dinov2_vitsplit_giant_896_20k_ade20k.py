# ViT-Split-G on ade20k, crop 896: out_indices repeat block 27 as the original does (14 features); total batch 1 x 8 GPUs = 8, 40k iters (the README's runs).
_base_ = [
    '../../_base_/models/vitsplit_linear.py', '../../_base_/datasets/ade20k_896.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
]
crop_size = (896, 896)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        out_indices=[27, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39],
        trunk=dict(arch='giant', pretrained='giant'),
        select_layers=[32, 33, 34, 35, 36, 37, 38, 39],
        channels=1536),
    decode_head=dict(in_channels=1536, channels=1536, num_classes=150),
    test_cfg=dict(crop_size=crop_size, stride=(341, 341)))
optim_wrapper = dict(optimizer=dict(lr=0.0002))
train_dataloader = dict(batch_size=1)
