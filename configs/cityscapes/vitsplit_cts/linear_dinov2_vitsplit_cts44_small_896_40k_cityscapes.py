# ViT-Split-S on Cityscapes 896 with content-aware token sharing: 43.75 % fewer tokens in the
# frozen trunk and the task head, the CTS paper's Cityscapes setting (tue-mps/cts-segmenter
# TRAINING.md): of 2304 tokens (768 px crops, patch 16) 960 patches stay and 336 superpatches share,
# 1296 tokens. Here 896 px, patch 14: 4096 patches, ceil(0.4375 * 4096 / 3) = 598 of the 1024
# superpatches shared (58.4 %; the paper's 336 of 576: 58.3 %), 2302 tokens.
# Train the policy first (one per dataset and patch size):
#   python tools/train_cts_policy.py THIS_CONFIG --out checkpoints/cts_policy_cityscapes_896_p14.pth
_base_ = ['../vitsplit/linear_dinov2_vitsplit_small_896_20k_cityscapes.py']
model = dict(
    backbone=dict(
        token_sharing=dict(
            type='TokenSharing',
            reduction=0.4375,
            # The data preprocessor's normalisation: the policy undoes it and applies its own.
            input_mean={{_base_.model.data_preprocessor.mean}},
            input_std={{_base_.model.data_preprocessor.std}},
            policy=dict(type='CTSPolicyNet',
                        pretrained='checkpoints/cts_policy_cityscapes_896_p14.pth'))))
