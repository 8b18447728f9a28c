# The embedded demo on a frozen trunk pretrained on a synthetic pretext of other shapes and
# textures (tools/pretrain_tiny_trunk.py; weights shipped in assets/, so nothing is downloaded),
# with the original recipe's task head: copied from the pretrained blocks, at 0.1x the lr.
# `python tools/demo.py --trunk dinov2-pretrained`.
_base_ = ['./vitsplit_tiny_shapes.py']
model = dict(
    backbone=dict(
        trunk=dict(pretrained='{{ fileDirname }}/../../assets/dinov2_tiny_pretext.safetensors')))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone.task_head': dict(lr_mult=0.1)}))
