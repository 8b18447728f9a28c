"""TimmViT: maps equal timm's own forward_intermediates, RoPE cached per grid, the timm DINOv2
path equals our hand-written DINOv2, bad input fails early with one clear error."""
import pytest
import torch
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401
from mmseg_custom.models.backbones.trunk import centre_pad

TINY = dict(embed_dim=64, depth=3, num_heads=2)
# One small model per family and variant: RoPE + storage tokens (DINOv3, plain and SwiGLU),
# absolute + RoPE (EVA02), no prefix token (SigLIP), pos-embed outside the cls token (DeiT III),
# pre-norm (CLIP), DINOv2.
MODELS_UNDER_TEST = [
    'vit_small_patch16_dinov3', 'vit_small_plus_patch16_dinov3_qkvb',
    'eva02_base_patch16_clip_224', 'vit_base_patch16_siglip_224', 'deit3_base_patch16_224',
    'vit_base_patch16_clip_224', 'vit_base_patch14_dinov2',
]


def build(name, **kwargs):
    trunk = MODELS.build(dict(type='TimmViT', name=name, model_kwargs=dict(TINY), **kwargs))
    trunk.init_weights()
    # Random, non-trivial layer scales: timm initialises DINOv3's at 1e-5 (blocks ~ identity).
    for n, p in trunk.named_parameters():
        if 'gamma' in n:
            torch.nn.init.uniform_(p, 0.5, 1.5)
    return trunk.eval()


@pytest.mark.parametrize('name', MODELS_UNDER_TEST)
def test_maps_equal_timm_forward_intermediates(name):
    torch.manual_seed(0)
    trunk = build(name)
    p = trunk.patch_size
    out_indices = [2, 0, 2, 1]  # any order, repeats
    # Two grids, then the first again (cached RoPE tables), and a size needing padding.
    for size in [(4 * p, 4 * p), (3 * p, 5 * p), (4 * p, 4 * p), (3 * p + 5, 4 * p - 3)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            ours = trunk(x, out_indices)
            ref = trunk.model.forward_intermediates(
                centre_pad(x, p), indices=[0, 1, 2], norm=True, output_fmt='NCHW',
                intermediates_only=True)
        grid = (-(-size[0] // p), -(-size[1] // p))
        for i, feat in zip(out_indices, ours):
            assert feat.shape == (2, 64, *grid)
            torch.testing.assert_close(feat, ref[i], atol=1e-5, rtol=1e-5)
    assert trunk.num_prefix_tokens == trunk.model.num_prefix_tokens
    if 'siglip' in name:
        assert trunk.num_prefix_tokens == 0
    if 'dinov3' in name:
        assert trunk.num_prefix_tokens == 5 and trunk.patch_size == 16


def test_rope_table_cached_per_grid():
    trunk = build('vit_small_patch16_dinov3')
    a = trunk.rope_table((4, 5), torch.device('cpu'))
    b = trunk.rope_table((6, 6), torch.device('cpu'))
    assert trunk.rope_table((4, 5), torch.device('cpu')) is a
    assert a.shape[0] == 20 and b.shape[0] == 36
    torch.testing.assert_close(a, trunk.model.rope.get_embed(shape=[4, 5]))


def test_apply_block_on_a_copy_and_gradients():
    """The interface ViT-Split uses: a trainable copy of a block gets gradients, the trunk none."""
    import copy
    trunk = build('vit_small_patch16_dinov3').requires_grad_(False)
    head = copy.deepcopy(trunk.blocks[2]).requires_grad_(True)
    tokens, grid = trunk.tokenize(torch.randn(1, 3, 40, 56))
    assert grid == (3, 4) and tokens.shape == (1, 5 + 12, 64)
    trunk.to_map(trunk.apply_block(head, tokens, grid), grid).sum().backward()
    assert all(p.grad is not None for p in head.parameters())
    assert all(p.grad is None for p in trunk.parameters())


def test_timm_dinov2_equals_handwritten_dinov2(tmp_path):
    """Same weights (official DINOv2 layout, read through timm's own filter) at the pretraining
    grid (37 x 37): timm's DINOv2 and ours give the same maps."""
    torch.manual_seed(0)
    ours = MODELS.build(dict(type='DINOv2', arch=dict(embed_dims=64, depth=3, num_heads=2,
                                                      ffn_type='mlp')))
    ours.init_weights()
    for n, p in ours.named_parameters():
        if n.endswith(('bias', 'gamma', 'norm1.weight', 'norm2.weight')) or 'token' in n:
            torch.nn.init.normal_(p, 0.5 if 'gamma' in n else 0.0, 0.2)
    path = tmp_path / 'dinov2_tiny_pretrain.pth'
    torch.save(ours.state_dict(), path)
    timm_trunk = MODELS.build(dict(type='TimmViT', name='vit_base_patch14_dinov2',
                                   model_kwargs=dict(TINY), pretrained=str(path)))
    timm_trunk.init_weights()
    x = torch.randn(2, 3, 518, 518)
    with torch.no_grad():
        a = ours.eval()(x, [0, 2])
        b = timm_trunk.eval()(x, [0, 2])
    for fa, fb in zip(a, b):
        assert fa.shape == (2, 64, 37, 37)
        torch.testing.assert_close(fa, fb, atol=1e-5, rtol=1e-5)


def test_unknown_timm_name():
    with pytest.raises(ValueError, match="unknown timm model 'vit_smal_patch16_dinov3'"):
        MODELS.build(dict(type='TimmViT', name='vit_smal_patch16_dinov3'))


def test_patch_size_contradicting_the_config():
    with pytest.raises(ValueError, match='patch_size=14.*patch size 16'):
        MODELS.build(dict(type='TimmViT', name='vit_small_patch16_dinov3', patch_size=14,
                          model_kwargs=dict(TINY)))


def test_weights_of_another_architecture(tmp_path):
    from safetensors.torch import save_file
    deeper = dict(TINY, depth=4)
    path = tmp_path / 'model.safetensors'
    save_file(MODELS.build(dict(type='TimmViT', name='vit_small_patch16_dinov3',
                                model_kwargs=deeper)).model.state_dict(), str(path))
    trunk = MODELS.build(dict(type='TimmViT', name='vit_small_patch16_dinov3', pretrained=str(path),
                              model_kwargs=dict(TINY)))
    with pytest.raises(RuntimeError, match=r'model.safetensors do not fit.*unexpected.*blocks\.3'):
        trunk.init_weights()
    wider = MODELS.build(dict(type='TimmViT', name='vit_small_patch16_dinov3',
                              model_kwargs=dict(TINY, embed_dim=96)))
    save_file(wider.model.state_dict(), str(path))
    with pytest.raises(RuntimeError, match=r'shape mismatches.*\(96'):
        trunk.init_weights()


def test_weights_of_another_patch_size(tmp_path):
    from safetensors.torch import save_file
    sd = build('vit_small_patch16_dinov3').model.state_dict()
    sd['patch_embed.proj.weight'] = torch.zeros(64, 3, 14, 14)
    path = tmp_path / 'model.safetensors'
    save_file(sd, str(path))
    trunk = MODELS.build(dict(type='TimmViT', name='vit_small_patch16_dinov3', pretrained=str(path),
                              model_kwargs=dict(TINY)))
    with pytest.raises(ValueError, match=r'patch size \(14, 14\).*patch size \(16, 16\)'):
        trunk.init_weights()


def test_transformers_dinov2_folder(tmp_path):
    """A transformers DINOv2 folder read by the timm DINOv2 trunk gives transformers' own features
    (at the pretraining grid, where no position interpolation happens)."""
    from transformers import Dinov2Config, Dinov2Model
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=64, num_hidden_layers=3, num_attention_heads=2,
                          intermediate_size=256, image_size=518, patch_size=14)
    hf = Dinov2Model(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path / 'hf')
    trunk = MODELS.build(dict(type='TimmViT', name='vit_base_patch14_dinov2', model_kwargs=TINY,
                              pretrained=str(tmp_path / 'hf')))
    trunk.init_weights()
    x = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        hidden = hf(pixel_values=x, output_hidden_states=True).hidden_states
        ours = trunk.eval()(x, [1, 2])
    for i, feat in zip([1, 2], ours):
        ref = hf.layernorm(hidden[i + 1])[:, 1:].transpose(1, 2).reshape(1, 64, 37, 37)
        torch.testing.assert_close(feat, ref, atol=1e-5, rtol=1e-5)
