# ViT-Split-L on ADE20K 512 with content-aware token sharing: 30 % fewer tokens in the frozen
# trunk and the task head, the CTS paper's ADE20K setting (tue-mps/cts-segmenter README: of 1024
# tokens 612 patches stay and 103 superpatches share). Here 512 px padded to 518, patch 14: 1369
# patches, ceil(0.3 * 1369 / 3) = 137 superpatches shared, 958 tokens.
# Train the policy first (one per dataset and patch size):
#   python tools/train_cts_policy.py THIS_CONFIG --out checkpoints/cts_policy_ade20k_512_p14.pth
_base_ = ['../vitsplit/linear_dinov2_vitsplit_large_512_20k_ade20k.py']
model = dict(
    backbone=dict(
        token_sharing=dict(
            type='TokenSharing',
            reduction=0.3,
            # The data preprocessor's normalisation: the policy undoes it and applies its own.
            input_mean={{_base_.model.data_preprocessor.mean}},
            input_std={{_base_.model.data_preprocessor.std}},
            policy=dict(type='CTSPolicyNet',
                        pretrained='checkpoints/cts_policy_ade20k_512_p14.pth'))))
