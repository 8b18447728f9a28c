# The fixture's model (official Rein config at DINOv2-S, out_indices 3/5/7/11) as our GTAV config
# with a small trunk: the test loads the official checkpoint through mmseg.apis.init_model.
_base_ = ['../../../configs/gtav/rein/mask2former_dinov2_rein_large_512_40k_gtav.py']
model = dict(
    backbone=dict(trunk=dict(arch='small', pretrained=None), out_indices=[3, 5, 7, 11]),
    decode_head=dict(in_channels=[384, 384, 384, 384]))
