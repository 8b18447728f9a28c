# Baseline: a plain timm trunk (DINOv3-S here) + the linear upsampling head. frozen=True is the
# linear probe, frozen=False full fine-tuning.
_base_ = ['./vitsplit_linear.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='PlainBackbone',
        trunk=dict(type='TimmViT', name='vit_small_patch16_dinov3', pretrained='dinov3_small'),
        out_indices=[11],
        frozen=True))
