# LoRA-S (peft, rank 8 on qkv) on ADE20K with ViT-Split's linear head and recipe, crop 512: the
# frozen DINOv2-S trunk, LoRA in every block, the last block's patch tokens into the same
# ConvUpsampleLinearBNHead, beside ../rein/linear_dinov2_rein_small_512_40k_ade20k.py and
# ../vitsplit/linear_dinov2_vitsplit_small_512_20k_ade20k.py. Total batch 2 x 4 GPUs, 40k iters.
_base_ = ['../rein/linear_dinov2_rein_small_512_40k_ade20k.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='PEFTBackbone',
        trunk=dict(type='DINOv2', arch='small', num_register_tokens=0, pretrained='small'),
        adapter=dict(type='LoRAAdapter', r=8, lora_alpha=8, target_modules=['qkv']),
        out_indices=[11]))
# Frozen weights inside the LoRA-wrapped layers stay out of the optimizer (Rein's constructor).
optim_wrapper = dict(constructor='PEFTOptimWrapperConstructor')
