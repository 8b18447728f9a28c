"""DINOv2 trunk: weights in the official, timm and Hugging Face layouts; offline errors."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from safetensors.torch import save_file

import mmseg_custom  # noqa: F401
from mmseg_custom.models import weights as W

init_default_scope('mmseg')


def tiny(ffn='mlp', regs=0, **kw):
    return dict(type='DINOv2', arch=dict(embed_dims=32, depth=2, num_heads=2, ffn_type=ffn),
                img_size=56, num_register_tokens=regs, **kw)


def official_state_dict(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = MODELS.build(cfg)
    return {k: torch.randn(v.shape, generator=g) * 0.1 + (1 if k.endswith(('gamma', 'norm1.weight'))
                                                          else 0)
            for k, v in model.state_dict().items()}


def as_timm(sd):
    sd = dict(sd)
    sd.pop('mask_token')
    if 'register_tokens' in sd:
        sd['reg_token'] = sd.pop('register_tokens')
        sd['cls_token'] = sd['cls_token'] + sd['pos_embed'][:, :1]
        sd['pos_embed'] = sd['pos_embed'][:, 1:]
    return {k.replace('mlp.w12', 'mlp.fc1').replace('mlp.w3', 'mlp.fc2'): v for k, v in sd.items()}


def as_hf(sd):
    out = {'embeddings.cls_token': sd['cls_token'], 'embeddings.mask_token': sd['mask_token'],
           'embeddings.position_embeddings': sd['pos_embed'],
           'embeddings.patch_embeddings.projection.weight': sd['patch_embed.proj.weight'],
           'embeddings.patch_embeddings.projection.bias': sd['patch_embed.proj.bias'],
           'layernorm.weight': sd['norm.weight'], 'layernorm.bias': sd['norm.bias']}
    if 'register_tokens' in sd:
        out['embeddings.register_tokens'] = sd['register_tokens']
    names = {'norm1': 'norm1', 'norm2': 'norm2', 'attn.proj': 'attention.output.dense',
             'mlp.fc1': 'mlp.fc1', 'mlp.fc2': 'mlp.fc2', 'mlp.w12': 'mlp.weights_in',
             'mlp.w3': 'mlp.weights_out'}
    for k, v in sd.items():
        if not k.startswith('blocks.'):
            continue
        _, i, rest = k.split('.', 2)
        pre = f'encoder.layer.{i}.'
        if rest.startswith('attn.qkv.'):
            for part, t in zip(('query', 'key', 'value'), v.chunk(3)):
                out[f'{pre}attention.attention.{part}.{rest.rsplit(".", 1)[1]}'] = t
        elif rest.startswith(('ls1', 'ls2')):
            out[f'{pre}layer_scale{rest[2]}.lambda1'] = v
        else:
            mod, leaf = rest.rsplit('.', 1)
            out[f'{pre}{names[mod]}.{leaf}'] = v
    return {'dinov2.' + k: v.contiguous() for k, v in out.items()}


@pytest.mark.parametrize('ffn, regs', [('mlp', 0), ('mlp', 4), ('swiglu', 0)])
def test_three_layouts_give_identical_features(ffn, regs, tmp_path):
    sd = official_state_dict(tiny(ffn, regs))
    files = {'official': tmp_path / 'official.pth', 'timm': tmp_path / 'timm.pth',
             'hf': tmp_path / 'model.safetensors'}
    torch.save(sd, files['official'])
    torch.save({'model': as_timm(sd)}, files['timm'])
    save_file(as_hf(sd), str(files['hf']))
    x = torch.randn(2, 3, 45, 61)  # not multiples of the patch: centre-padded to 56 x 70
    feats = {}
    for name, path in files.items():
        trunk = MODELS.build(tiny(ffn, regs, pretrained=str(path)))
        trunk.init_weights()
        trunk.eval()
        feats[name] = trunk(x, [0, 1])
    for name in ('timm', 'hf'):
        for a, b in zip(feats[name], feats['official']):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f'{name} layout differs')
    assert feats['official'][1].shape == (2, 32, 4, 5)


def test_wrong_arch_weights_are_a_clear_error(tmp_path):
    torch.save(official_state_dict(tiny(regs=4)), tmp_path / 'reg.pth')
    trunk = MODELS.build(tiny(regs=0, pretrained=str(tmp_path / 'reg.pth')))
    with pytest.raises(RuntimeError, match='num_register_tokens'):
        trunk.init_weights()


def test_offline_error_names_file_url_and_config_key(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))

    def offline(url, dst, progress=True):
        raise OSError('Network is unreachable')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    trunk = MODELS.build(tiny(pretrained='small'))
    with pytest.raises(FileNotFoundError) as e:
        trunk.init_weights()
    msg = str(e.value)
    assert 'https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth' in msg
    assert str(tmp_path / 'hub' / 'checkpoints' / 'dinov2_vits14_pretrain.pth') in msg
    assert 'model.backbone.trunk.pretrained' in msg


def test_cached_official_file_is_found_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, 'download_url_to_file', pytest.fail)
    (tmp_path / 'checkpoints').mkdir()
    path = tmp_path / 'checkpoints' / 'dinov2_vitg14_reg4_pretrain.pth'
    path.write_bytes(b'')
    assert W.resolve_weights('giant_reg4') == str(path)


def test_missing_local_file_and_truncated_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        W.resolve_weights(str(tmp_path / 'nope.pth'))
    sd = official_state_dict(tiny())
    torch.save(sd, tmp_path / 'w.pth')
    data = (tmp_path / 'w.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(RuntimeError, match='cut.pth.*truncated'):
        W.read_state_dict(str(tmp_path / 'cut.pth'))


def test_pos_embed_interpolation_matches_official_formula():
    """Offset 0.1 uses scale_factor (h+0.1)/M, antialias off; registers: size, antialias on."""
    for regs in (0, 4):
        trunk = MODELS.build(tiny(regs=regs))
        torch.nn.init.normal_(trunk.pos_embed)
        pos = trunk.interpolate_pos_encoding(3, 7, torch.float32)
        grid = trunk.pos_embed[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
        kw = (dict(scale_factor=(3.1 / 4, 7.1 / 4)) if regs == 0 else dict(size=(3, 7)))
        ref = torch.nn.functional.interpolate(grid, mode='bicubic', antialias=regs > 0, **kw)
        torch.testing.assert_close(pos[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 21, 32))
        torch.testing.assert_close(pos[:, 0], trunk.pos_embed[:, 0])
