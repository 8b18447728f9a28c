# Rein (CVPR 2024): the frozen DINOv2-L/16 + Mask2Former base with LoRA Reins after every block,
# and Rein's Mask2Former head whose 100 queries are linked to the Reins tokens. As the official
# configs/_base_/models/rein_dinov2_mask2former.py.
_base_ = ['./dinov2_mask2former_512.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='ReinBackbone',
        trunk=dict(type='DINOv2', arch='large', patch_size=16, img_size=512,
                   layer_scale_init=1e-5, pretrained='large'),
        reins=dict(type='LoRAReins', token_length=100, lora_dim=16, link_token_to_query=True),
        out_indices=[7, 11, 15, 23],
        feat_scales=[4, 2, 1, 0.5]),
    decode_head=dict(type='ReinMask2FormerHead', replace_query_feat=True))
