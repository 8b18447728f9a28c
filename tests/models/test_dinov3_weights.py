"""DINOv3 weights in the three layouts users have load to identical features, equal to those of
transformers' own DINOv3 model; names resolve to files in the caches, or fail with one clear error.

The same random weights are written by each library's own save path: transformers'
``save_pretrained`` (folder), timm's ``save_for_hf`` (``model.safetensors``), and Meta's official
key layout (``dinov3/models/vision_transformer.py``: ``storage_tokens``, fused ``attn.qkv`` with
``bias_mask``, ``ls1.gamma``, ``rope_embed.periods`` in bfloat16), which this test writes itself
since Meta's code is not a package.
"""
import json
import os.path as osp

import pytest
import timm
import torch
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401
from mmseg_custom.models.timm_weights import DINOV3, META_FORM, resolve_timm_weights

# A test-only dependency (requirements.txt pins it; CI always has it): the GPU check's bare
# environment carries no transformers and collects this module without running it.
transformers = pytest.importorskip('transformers')
DINOv3ViTConfig, DINOv3ViTModel = transformers.DINOv3ViTConfig, transformers.DINOv3ViTModel

DIM, DEPTH, HEADS = 64, 3, 2


def timm_kwargs():
    return dict(embed_dim=DIM, depth=DEPTH, num_heads=HEADS)


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if 'norm' in name and name.endswith('weight') or 'lambda' in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def meta_state_dict(hf_sd, gated):
    """transformers' keys -> Meta's official DINOv3 layout, written here from the official code."""
    sd = {
        'cls_token': hf_sd['embeddings.cls_token'],
        'storage_tokens': hf_sd['embeddings.register_tokens'],
        'mask_token': hf_sd['embeddings.mask_token'][0],
        'patch_embed.proj.weight': hf_sd['embeddings.patch_embeddings.weight'],
        'patch_embed.proj.bias': hf_sd['embeddings.patch_embeddings.bias'],
        'norm.weight': hf_sd['norm.weight'],
        'norm.bias': hf_sd['norm.bias'],
    }
    head_dim = DIM // HEADS
    sd['rope_embed.periods'] = (100.0 ** (2 * torch.arange(head_dim // 4) / (head_dim // 2))
                                ).to(torch.bfloat16)
    for i in range(DEPTH):
        h, b = f'layer.{i}.', f'blocks.{i}.'
        q, k, v = (hf_sd[h + f'attention.{n}_proj.weight'] for n in 'qkv')
        sd[b + 'attn.qkv.weight'] = torch.cat([q, k, v])
        qb, vb = hf_sd[h + 'attention.q_proj.bias'], hf_sd[h + 'attention.v_proj.bias']
        # Meta keeps a (random, masked) key bias; the mask zeroes it in the forward pass.
        sd[b + 'attn.qkv.bias'] = torch.cat([qb, torch.randn_like(qb), vb])
        sd[b + 'attn.qkv.bias_mask'] = torch.cat([torch.ones_like(qb), torch.zeros_like(qb),
                                                  torch.ones_like(qb)])
        sd[b + 'attn.proj.weight'] = hf_sd[h + 'attention.o_proj.weight']
        sd[b + 'attn.proj.bias'] = hf_sd[h + 'attention.o_proj.bias']
        for n in ('norm1', 'norm2'):
            for t in ('weight', 'bias'):
                sd[b + f'{n}.{t}'] = hf_sd[h + f'{n}.{t}']
        sd[b + 'ls1.gamma'] = hf_sd[h + 'layer_scale1.lambda1']
        sd[b + 'ls2.gamma'] = hf_sd[h + 'layer_scale2.lambda1']
        mlp = ({'gate_proj': 'w1', 'up_proj': 'w2', 'down_proj': 'w3'} if gated else
               {'up_proj': 'fc1', 'down_proj': 'fc2'})
        for src, dst in mlp.items():
            for t in ('weight', 'bias'):
                sd[b + f'mlp.{dst}.{t}'] = hf_sd[h + f'mlp.{src}.{t}']
    return sd


def hf_maps(hf, x, indices):
    """transformers' own features: hidden state after each block, final norm, patches only."""
    with torch.no_grad():
        hidden = hf(pixel_values=x, output_hidden_states=True).hidden_states
    p = hf.config.patch_size
    out = []
    for i in indices:
        t = hf.norm(hidden[i + 1])[:, 1 + hf.config.num_register_tokens:]
        out.append(t.transpose(1, 2).reshape(x.shape[0], DIM, x.shape[2] // p, x.shape[3] // p))
    return out


@pytest.fixture(scope='module', params=['vit_small_patch16_dinov3_qkvb',
                                        'vit_small_plus_patch16_dinov3_qkvb'])
def layouts(request, tmp_path_factory):
    """The same random DINOv3 weights in the three layouts, and transformers' model."""
    name = request.param
    gated = 'plus' in name
    root = tmp_path_factory.mktemp(name)
    probe = timm.create_model(name, num_classes=0, **timm_kwargs())
    mlp = probe.blocks[0].mlp
    hidden = mlp.fc1_g.out_features if gated else mlp.fc1.out_features
    config = DINOv3ViTConfig(
        hidden_size=DIM, intermediate_size=hidden, num_hidden_layers=DEPTH,
        num_attention_heads=HEADS, num_register_tokens=4, patch_size=16, image_size=64,
        use_gated_mlp=gated, hidden_act='silu' if gated else 'gelu', layer_norm_eps=1e-5,
        rope_theta=100.0)
    hf = DINOv3ViTModel(config).eval()
    randomize(hf)
    hf.save_pretrained(root / 'hf')
    from safetensors.torch import load_file
    meta = meta_state_dict(load_file(root / 'hf' / 'model.safetensors'), gated)
    torch.save(meta, root / 'dinov3_meta.pth')
    # timm's own path: its checkpoint filter reads Meta's file, save_for_hf writes timm's file.
    model = timm.create_model(name, num_classes=0, **timm_kwargs())
    model.load_state_dict(timm.models.eva.checkpoint_filter_fn(meta, model))
    timm.models.save_for_hf(model, str(root / 'timm'), safe_serialization=True)
    return dict(name=name, hf=hf, paths={
        'meta': str(root / 'dinov3_meta.pth'), 'timm': str(root / 'timm' / 'model.safetensors'),
        'timm_folder': str(root / 'timm'), 'transformers': str(root / 'hf')})


def test_three_layouts_identical_features(layouts):
    x = torch.randn(2, 3, 48, 80)
    indices = [0, 2, 1]
    ref = hf_maps(layouts['hf'], x, indices)
    feats = {}
    for layout, path in layouts['paths'].items():
        trunk = MODELS.build(dict(type='TimmViT', name=layouts['name'], pretrained=path,
                                  model_kwargs=timm_kwargs()))
        trunk.init_weights()
        with torch.no_grad():
            feats[layout] = trunk.eval()(x, indices)
        for ours, theirs in zip(feats[layout], ref):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for layout in ('timm', 'timm_folder', 'transformers'):
        for a, b in zip(feats['meta'], feats[layout]):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_meta_file_with_query_bias_into_a_trunk_without(layouts):
    trunk = MODELS.build(dict(type='TimmViT', name=layouts['name'].replace('_qkvb', ''),
                              pretrained=layouts['paths']['meta'], model_kwargs=timm_kwargs()))
    with pytest.raises(ValueError, match='non-zero qkv biases.*_qkvb'):
        trunk.init_weights()


def test_meta_file_with_other_rope_base(layouts, tmp_path):
    sd = torch.load(layouts['paths']['meta'], weights_only=True)
    sd['rope_embed.periods'] = sd['rope_embed.periods'].float() * 10
    path = tmp_path / 'other_base.pth'
    torch.save(sd, path)
    trunk = MODELS.build(dict(type='TimmViT', name=layouts['name'], pretrained=str(path),
                              model_kwargs=timm_kwargs()))
    with pytest.raises(ValueError, match='RoPE periods differ'):
        trunk.init_weights()


def test_hf_folder_without_config(layouts, tmp_path):
    import shutil
    folder = tmp_path / 'no_config'
    folder.mkdir()
    shutil.copy(osp.join(layouts['paths']['transformers'], 'model.safetensors'), folder)
    trunk = MODELS.build(dict(type='TimmViT', name=layouts['name'], pretrained=str(folder),
                              model_kwargs=timm_kwargs()))
    with pytest.raises(FileNotFoundError, match='without config.json'):
        trunk.init_weights()


def test_hf_config_contradicting_the_trunk(layouts, tmp_path):
    import shutil
    folder = tmp_path / 'patch14'
    shutil.copytree(layouts['paths']['transformers'], folder)
    config = json.loads((folder / 'config.json').read_text())
    config['patch_size'] = 14
    (folder / 'config.json').write_text(json.dumps(config))
    trunk = MODELS.build(dict(type='TimmViT', name=layouts['name'], pretrained=str(folder),
                              model_kwargs=timm_kwargs()))
    with pytest.raises(ValueError, match=r'config.json contradicts.*patch_size=14 \(trunk: 16\)'):
        trunk.init_weights()


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hf'))
    return tmp_path


def test_name_missing_everywhere_says_what_and_where(empty_caches):
    with pytest.raises(FileNotFoundError) as e:
        resolve_timm_weights('dinov3_small', 'vit_small_patch16_dinov3')
    msg = str(e.value)
    meta_file = 'dinov3_vits16_pretrain_lvd1689m-08c60483.pth'
    assert osp.join(str(empty_caches), 'torch', 'hub', 'checkpoints', meta_file) in msg
    assert META_FORM in msg
    assert 'timm/vit_small_patch16_dinov3.lvd1689m' in msg
    assert 'facebook/dinov3-vits16-pretrain-lvd1689m' in msg and 'gated' in msg
    assert str(empty_caches / 'hf') in msg


def hf_cache_file(cache, repo, filename, content=b'x'):
    """A file laid out as huggingface_hub caches it."""
    folder = cache / f'models--{repo.replace("/", "--")}'
    (folder / 'refs').mkdir(parents=True, exist_ok=True)
    (folder / 'refs' / 'main').write_text('abc123')
    snap = folder / 'snapshots' / 'abc123'
    snap.mkdir(parents=True, exist_ok=True)
    (snap / filename).write_bytes(content)
    return str(snap / filename)


def test_name_resolves_to_each_source(empty_caches):
    repo = DINOV3['dinov3_base'][2]
    hf_dir = osp.dirname(hf_cache_file(empty_caches / 'hf', repo, 'config.json'))
    hf_cache_file(empty_caches / 'hf', DINOV3['dinov3_base'][2], 'model.safetensors')
    assert resolve_timm_weights('dinov3_base', 'vit_base_patch16_dinov3') == hf_dir
    timm_file = hf_cache_file(empty_caches / 'hf', 'timm/vit_base_patch16_dinov3.lvd1689m',
                              'model.safetensors')
    assert resolve_timm_weights('dinov3_base', 'vit_base_patch16_dinov3.lvd1689m') == timm_file
    meta = empty_caches / 'torch' / 'hub' / 'checkpoints' / DINOV3['dinov3_base'][1]
    meta.parent.mkdir(parents=True)
    meta.write_bytes(b'x')
    assert resolve_timm_weights('dinov3_base', 'vit_base_patch16_dinov3_qkvb') == str(meta)


def test_name_of_another_size(empty_caches):
    with pytest.raises(ValueError, match="'dinov3_base' holds vit_base_patch16_dinov3 weights"):
        resolve_timm_weights('dinov3_base', 'vit_small_patch16_dinov3')


def test_timm_hub_name_missing(empty_caches):
    with pytest.raises(FileNotFoundError, match=r'(?s)timm/vit_base_patch16_clip_224.openai.*'
                       r'huggingface-cli download'):
        resolve_timm_weights('timm', 'vit_base_patch16_clip_224.openai')
    path = hf_cache_file(empty_caches / 'hf', 'timm/vit_base_patch16_clip_224.openai',
                         'model.safetensors')
    assert resolve_timm_weights('timm', 'vit_base_patch16_clip_224.openai') == path
