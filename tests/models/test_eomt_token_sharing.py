"""Token sharing (CTS) on the EoMT encoders is refused when the model is built, with one error
naming the encoder and what works instead (issue 28: where token sharing cannot apply to the new
heads, it refuses clearly)."""
import pytest
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401
import mmseg_custom.models.eomt  # noqa: F401
from mmseg_custom.models.backbones.trunk import UnsupportedCombination

TRUNK = dict(type='TimmViT', name='vit_small_patch14_reg4_dinov2', pretrained=None,
             model_kwargs=dict(embed_dim=64, depth=4, num_heads=2))
SHARING = dict(type='TokenSharing', reduction=0.3, policy=dict(type='CTSPolicyNet'))


@pytest.mark.parametrize('backbone', [
    dict(type='EoMTEncoder', trunk=TRUNK),
    dict(type='ViTSplitEoMTEncoder', trunk=TRUNK, select_layers=[2, 3], out_indices=[1, 3]),
], ids=['EoMTEncoder', 'ViTSplitEoMTEncoder'])
def test_token_sharing_on_eomt_is_refused(backbone):
    init_default_scope('mmseg')
    model = dict(type='EoMT', backbone=dict(backbone, token_sharing=SHARING),
                 decode_head=dict(type='EoMTHead', num_classes=3, num_queries=4, num_blocks=2))
    with pytest.raises(UnsupportedCombination) as err:
        MODELS.build(model)
    message = str(err.value)
    assert f'{backbone["type"]} (EoMT) does not support token sharing' in message
    assert 'TokenSharing' in message and 'ViTSplit / ViTSplitGate' in message
    assert 'unexpected keyword' not in message
    # Without token_sharing (or with None) the same encoder builds.
    model['backbone'] = dict(backbone, token_sharing=None)
    MODELS.build(model)
