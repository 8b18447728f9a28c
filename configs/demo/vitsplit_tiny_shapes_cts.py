# The embedded demo with content-aware token sharing (30 % fewer tokens). `python tools/demo.py
# --cts` trains the policy on the demo labels first (tools/train_cts_policy.py) and writes it here.
_base_ = ['./vitsplit_tiny_shapes.py']
model = dict(
    backbone=dict(
        token_sharing=dict(
            type='TokenSharing',
            reduction=0.3,
            policy=dict(type='CTSPolicyNet', pretrained='work_dirs/demo_cts/policy.pth'))))
