# ViT-Split-L on Cityscapes 896 with content-aware token sharing: 30 % fewer tokens in the frozen
# trunk and the task head. Train the policy first (one per dataset and patch size):
#   python tools/train_cts_policy.py THIS_CONFIG --out checkpoints/cts_policy_cityscapes_896_p14.pth
_base_ = ['../vitsplit/linear_dinov2_vitsplit_large_896_20k_cityscapes.py']
model = dict(
    backbone=dict(
        token_sharing=dict(
            type='TokenSharing',
            reduction=0.3,
            policy=dict(type='CTSPolicyNet',
                        pretrained='checkpoints/cts_policy_cityscapes_896_p14.pth'))))
