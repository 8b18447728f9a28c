"""The adapter base of Rein and the PEFT methods, and the cells that failed silently off the
tested diagonal (issue 25: LoRA on timm Eva trunks, checkpoints without the method's weights,
unsorted out_indices, VPT on RoPE trunks, the RoPE table cache)."""
import pytest
import torch
import torch.nn as nn
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401
from mmseg_custom.engine.checkpoint import CheckpointError, load_state_dict_exactly
from mmseg_custom.models.backbones import DINOv2, Trunk
from mmseg_custom.models.backbones.adapter_base import TrunklessCheckpointError
from mmseg_custom.models.backbones.trunk import UnsupportedCombination

DINOV2 = dict(type='DINOv2', arch=dict(embed_dims=64, depth=3, num_heads=2), patch_size=8,
              img_size=32)


def timm_trunk(name, **kw):
    return dict(type='TimmViT', name=name,
                model_kwargs=dict(embed_dim=64, num_heads=2, depth=3, img_size=32, **kw))


# Layer scales at 1: DINOv3's 1e-5 hides a random trunk's adapter changes below fp32 resolution.
DINOV3_QKVB = timm_trunk('vit_small_patch16_dinov3_qkvb', init_values=1.0)
DINOV3 = timm_trunk('vit_small_patch16_dinov3', init_values=1.0)
EVA02_FUSED = timm_trunk('eva02_tiny_patch14_224')  # fused qkv with q/v biases
EVA02 = timm_trunk('eva02_base_patch14_224')  # q/k/v projections


def build(trunk, adapter, **kw):
    init_default_scope('mmseg')
    kw.setdefault('out_indices', [1, 2])
    return MODELS.build(dict(type='PEFTBackbone', trunk=trunk, adapter=adapter, **kw))


def one_step(model, x, lr=1.0):
    """One SGD step on a fixed random target; returns the features before and after."""
    model.train()
    with torch.no_grad():
        before = [f.clone() for f in model(x)]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    loss = sum((f - torch.ones_like(f)).square().mean() for f in model(x))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    opt.step()
    model.eval()
    with torch.no_grad():
        after = model(x)
    return before, after, grads


@pytest.mark.parametrize('trunk', [DINOV3_QKVB, EVA02_FUSED, EVA02, DINOV2],
                         ids=['dinov3_qkvb', 'eva02_fused', 'eva02', 'dinov2'])
def test_lora_trains_on_every_trunk_with_qv_bias(trunk):
    """Eva with q/v biases used to call F.linear on qkv.weight: peft's LoRA was bypassed and
    lora_B stayed exactly 0."""
    torch.manual_seed(0)
    model = build(trunk, dict(type='LoRAAdapter', r=4, lora_alpha=8))
    model.init_weights()
    lora = {n for n, p in model.named_parameters() if '.lora_' in n}
    assert lora and {n for n, p in model.named_parameters() if p.requires_grad} == lora
    before, after, grads = one_step(model, torch.randn(2, 3, 32, 32))
    assert all(torch.count_nonzero(grads[n]) > 0 for n in lora if '.lora_B.' in n)
    # Bitwise: a bypassed adapter leaves the output exactly as it was (random trunks' layer
    # scales make the change itself small).
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


class _WeightReadingAttention(nn.Module):
    """An attention that bypasses module calls, as timm's Eva did with q/v biases."""

    def __init__(self, dim):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x, attn_mask=None):
        q, k, v = nn.functional.linear(x, self.qkv.weight, self.qkv.bias).chunk(3, dim=-1)
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


@MODELS.register_module(force=True)
class _WeightReadingTrunk(DINOv2):

    def __init__(self, **kw):
        super().__init__(**kw)
        for blk in self.blocks:
            blk.attn = _WeightReadingAttention(self.embed_dims)


def test_lora_on_a_trunk_that_bypasses_its_layers_is_refused_at_build():
    trunk = dict(DINOV2, type='_WeightReadingTrunk')
    with pytest.raises(UnsupportedCombination, match=r'LoRAAdapter on .*train nothing'):
        build(trunk, dict(type='LoRAAdapter', r=4))


def test_lora_defaults_to_the_unfused_projections_of_eva02():
    model = build(EVA02, dict(type='LoRAAdapter', r=4))
    wrapped = {n.rsplit('.', 1)[-1] for n, m in model.trunk.named_modules()
               if hasattr(m, 'base_layer')}
    assert wrapped == {'q_proj', 'k_proj', 'v_proj'}


def test_lora_checkpoint_without_lora_weights_is_refused(tmp_path):
    """The load hook used to fill missing lora keys at every load: a frozen baseline's checkpoint
    loaded into a LoRA model as complete."""
    torch.manual_seed(0)
    frozen = build(DINOV2, None)
    lora = build(DINOV2, dict(type='LoRAAdapter', r=4))
    ckpt = {'state_dict': {'backbone.' + k: v for k, v in frozen.state_dict().items()}}
    model = nn.Module()
    model.backbone = lora
    with pytest.raises(CheckpointError, match=r'missing from the checkpoint: .*lora_A'):
        load_state_dict_exactly(model, ckpt, 'frozen.pth')
    # The trunk's own pretrained file (no LoRA weights) still loads into the wrapped trunk.
    path = tmp_path / 'trunk.pth'
    torch.save(frozen.trunk.state_dict(), path)
    lora.trunk.pretrained = str(path)
    lora.init_weights()
    torch.testing.assert_close(lora.trunk.blocks[2].attn.qkv.base_layer.weight,
                               frozen.trunk.blocks[2].attn.qkv.weight)
    # ... and its own save loads back exactly.
    load_state_dict_exactly(model, {'state_dict': model.state_dict()}, 'lora.pth')


def test_trunkless_checkpoint_with_a_random_trunk_is_refused(tmp_path):
    init_default_scope('mmseg')
    cfg = dict(type='ReinBackbone', trunk=DINOV2, out_indices=[0, 1, 2],
               reins=dict(type='LoRAReins', token_length=4, lora_dim=4, link_token_to_query=False))
    model = MODELS.build(cfg)
    reins_only = {'reins.' + k: v for k, v in model.reins.state_dict().items()}
    with pytest.raises(TrunklessCheckpointError, match='pretrained=None'):
        model.load_state_dict(dict(reins_only))
    # With a trunk file the same checkpoint loads, the trunk from that file.
    path = tmp_path / 'trunk.pth'
    donor = MODELS.build(DINOV2)
    torch.save(donor.state_dict(), path)
    model = MODELS.build(dict(cfg, trunk=dict(DINOV2, pretrained=str(path))))
    model.load_state_dict(dict(reins_only))
    torch.testing.assert_close(model.trunk.blocks[1].attn.qkv.weight,
                               donor.blocks[1].attn.qkv.weight)


@pytest.mark.parametrize('kind', ['rein', 'peft'])
def test_feat_scales_pair_with_out_indices_in_the_order_given(kind):
    """Indices used to be sorted while scales were not: blocks got another block's scale."""
    torch.manual_seed(0)
    init_default_scope('mmseg')
    common = dict(trunk=DINOV2, out_indices=[2, 0, 1], feat_scales=[0.5, 2, 1])
    if kind == 'rein':
        model = MODELS.build(dict(type='ReinBackbone', reins=dict(
            type='Reins', token_length=4, link_token_to_query=False), **common))
    else:
        model = build(**common, adapter=None)
    ref = MODELS.build(dict(common, type='PEFTBackbone', adapter=None, feat_scales=None,
                            out_indices=[0, 1, 2])) if kind == 'peft' else None
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    feats = model(x)
    assert [tuple(f.shape[-2:]) for f in feats] == [(2, 2), (8, 8), (4, 4)]
    if ref is not None:
        ref.load_state_dict(model.state_dict())
        plain = ref.eval()(x)
        torch.testing.assert_close(feats[2], plain[1])  # block 1 at scale 1


@pytest.mark.parametrize('trunk', [DINOV3, EVA02], ids=['dinov3', 'eva02'])
def test_vpt_deep_trains_on_rope_trunks(trunk):
    """The rotary table had no rows for the prompts: the first step died inside timm."""
    torch.manual_seed(0)
    model = build(trunk, dict(type='VPTDeep', num_tokens=5))
    before, after, grads = one_step(model, torch.randn(2, 3, 32, 32))
    assert torch.count_nonzero(grads['adapter.prompts']) > 0
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_prompts_are_unrotated_and_patches_keep_their_rotation():
    from timm.layers import apply_rot_embed_cat
    from mmseg_custom.models.backbones.timm_vit import unrotated_rows
    init_default_scope('mmseg')
    trunk = MODELS.build(DINOV3)
    table = trunk.rope_table((4, 4), torch.device('cpu'))
    extended = unrotated_rows(table, 3)
    q = torch.randn(1, 2, 3 + 16, table.shape[-1] // 2)
    for half in (False, True):
        out = apply_rot_embed_cat(q, extended, half=half)
        torch.testing.assert_close(out[:, :, :3], q[:, :, :3])
        torch.testing.assert_close(out[:, :, 3:], apply_rot_embed_cat(q[:, :, 3:], table,
                                                                      half=half))


def test_rope_table_cache_is_bounded():
    init_default_scope('mmseg')
    trunk = MODELS.build(DINOV3)
    for side in range(1, 30):
        trunk.rope_table((side, side + 1), torch.device('cpu'))
    assert len(trunk._rope_cache) == trunk.ROPE_CACHE_SIZE
    assert ((29, 30), torch.device('cpu')) in trunk._rope_cache  # the newest stays


def test_adapter_backbones_share_one_base():
    from mmseg_custom.models.backbones import PEFTBackbone, ReinBackbone
    from mmseg_custom.models.backbones.adapter_base import AdapterBackbone
    for cls in (PEFTBackbone, ReinBackbone):
        assert issubclass(cls, AdapterBackbone)
        assert 'forward' not in vars(cls) and 'train' not in vars(cls)
    assert issubclass(DINOv2, Trunk)
