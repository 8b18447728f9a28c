# The embedded demo with the official EoMT: the same pretrained tiny trunk (DINOv2 architecture,
# dim 192, depth 6, assets/) fine-tuned whole, its last three blocks carrying the queries; the head,
# loss, annealing windows, data and schedule are vitsplit_eomt_tiny_shapes_pretrained.py's, so the
# two differ only in the encoder. `tools/compare.py --methods vitsplit_eomt eomt` runs both.
_base_ = ['./vitsplit_eomt_tiny_shapes_pretrained.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='EoMTEncoder',
        trunk={{_base_.model.backbone.trunk}}))
# The pretrained trunk at 0.1x the lr: the demo's lr (1e-3) is set for newly initialised parts and
# would overwrite the pretrained features within a short schedule; 0.1x is what the ViT-Split
# demos give the copies of these same blocks (and compare.py's 'finetune' gives the trunk), so the
# two EoMT demos train their query blocks at the same lr. (The official layer-wise decay, 0.8 per
# block, needs its own AdamW 1e-4 + two-stage warm-up recipe: EoMTOptimWrapperConstructor.)
optim_wrapper = dict(
    paramwise_cfg=dict(_delete_=True, custom_keys={'backbone.trunk': dict(lr_mult=0.1)}))
