# ViT-Split-EoMT (issue 28): a frozen trunk run once without autograd; the task head, trainable
# copies of its last blocks, carries EoMT's queries with masked attention; the prior head's
# frozen multi-level features are added to the upscaled patch features the masks are read from
# (see ViTSplitEoMTEncoder). DINOv3-S/16 here; experiment configs set the trunk and blocks.
# The frozen trunk keeps its native patch size (DINOv2: 14, i.e. one upscaling block).
_base_ = ['./eomt_dinov2.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='ViTSplitEoMTEncoder',
        trunk=dict(type='TimmViT', name='vit_small_patch16_dinov3', pretrained='dinov3_small'),
        out_indices=[2, 5, 8, 11],
        select_layers=[9, 10, 11]),
    decode_head=dict(in_channels=384, num_blocks=3))
