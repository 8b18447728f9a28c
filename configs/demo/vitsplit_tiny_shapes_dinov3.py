# The embedded demo on a tiny DINOv3-architecture trunk through timm (patch 16, RoPE, 4 storage
# tokens, dim 192, depth 6, random and frozen): `python tools/demo.py --trunk dinov3`.
_base_ = ['./vitsplit_tiny_shapes.py']
model = dict(
    backbone=dict(
        trunk=dict(
            _delete_=True,
            type='TimmViT',
            name='vit_small_patch16_dinov3',
            # init_values=1.0: full residual branches in the random trunk, as the DINOv2 demo's
            # layer scale (DINOv3's 1e-5 would leave the frozen features nearly the patch embedding).
            model_kwargs=dict(embed_dim=192, depth=6, num_heads=3, init_values=1.0))))
