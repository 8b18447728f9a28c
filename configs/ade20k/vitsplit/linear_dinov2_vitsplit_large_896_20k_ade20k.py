# ViT-Split-L on ade20k, crop 896: total batch 2 x 4 GPUs = 8, 40k iters (the README's runs).
_base_ = [
    '../../_base_/models/vitsplit_linear.py', '../../_base_/datasets/ade20k_896.py',
    '../../_base_/default_runtime.py', '../../_base_/schedules/vitsplit_40k.py'
]
crop_size = (896, 896)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        out_indices=[2, 5, 8, 11, 14, 17, 20, 23],
        trunk=dict(arch='large', pretrained='large'),
        select_layers=[20, 21, 22, 23],
        channels=1024),
    decode_head=dict(in_channels=1024, channels=1024, num_classes=150),
    test_cfg=dict(crop_size=crop_size, stride=(341, 341)))
optim_wrapper = dict(optimizer=dict(lr=0.0002))
train_dataloader = dict(batch_size=2)
