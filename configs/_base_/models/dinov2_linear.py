# Baseline: plain DINOv2 + the same linear upsampling head. frozen=True is the linear probe,
# frozen=False full fine-tuning.
_base_ = ['./vitsplit_linear.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='DINOv2Backbone',
        trunk=dict(type='DINOv2', arch='small', num_register_tokens=0, pretrained='small'),
        out_indices=[11],
        frozen=True))
