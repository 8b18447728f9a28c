"""EoMT against the official code (tue-mps/eomt @ 7bd19dd): the golden fixture in tests/data/eomt
(README.md there: the model, the scoring path, the tolerance 1e-4), the checkpoint layouts, the
mask annealing, the evaluation windows, and training at toy width."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

mmdet = pytest.importorskip('mmdet')

import mmseg_custom  # noqa: E402,F401
from mmseg_custom.models import eomt  # noqa: E402
from mmseg_custom.models.eomt import (  # noqa: E402
    EoMTMaskAnnealingHook, mask_annealing, window_starts)

DATA = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data', 'eomt')
CONFIG = osp.join(DATA, 'eomt_small_citys_128.py')
TOL = 1e-4  # the fixture README's tolerance; the official fp32 and fp64 differ by 3e-6


def _maker():
    spec = importlib.util.spec_from_file_location('make_eomt_checkpoint',
                                                  osp.join(DATA, 'make_eomt_checkpoint.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def golden():
    return torch.load(osp.join(DATA, 'eomt_small_citys.golden.pt'), weights_only=True)


@pytest.fixture(scope='module')
def official(tmp_path_factory):
    """The official state dict (network.* keys) and the file in the maker's default layout."""
    import json
    maker = _maker()
    spec = json.load(open(osp.join(DATA, 'eomt_small_citys.keys.json')))
    sd = maker.make_state_dict(spec)
    path = str(tmp_path_factory.mktemp('eomt') / 'eomt_small.pth')
    torch.save({'state_dict': sd, 'meta': dict(spec['meta'])}, path)
    return sd, path


@pytest.fixture(scope='module')
def model(official):
    """fp64, as the README prefers (the checks of the official scores)."""
    from mmseg.apis import init_model
    return init_model(CONFIG, official[1], device='cpu').double().eval()


@pytest.fixture(scope='module')
def model32(official):
    """fp32 (4x faster on the CPU: fp64 depthwise convs have no fast kernel), for the rest."""
    from mmseg.apis import init_model
    return init_model(CONFIG, official[1], device='cpu').eval()


def _inputs(golden, i):
    imgs = golden['imgs'][i][:, [2, 1, 0]]  # BGR, as LoadImageFromFile gives them
    samples = [SegDataSample(metainfo=dict(meta)) for meta in golden['img_metas'][i]]
    return dict(inputs=list(imgs), data_samples=samples)


def _scores(model, golden, i, test_cfg=None):
    data = model.data_preprocessor(_inputs(golden, i), training=False)
    old = model.test_cfg
    model.test_cfg = Config(test_cfg or golden['test_cfg'])
    try:
        with torch.no_grad():
            inputs = data['inputs'].to(next(model.parameters()).dtype)
            out = model.predict(inputs, data['data_samples'])
    finally:
        model.test_cfg = old
    o, s = golden['grid']
    return torch.stack([d.seg_logits.data for d in out])[..., o::s, o::s]


def test_checkpoint_keys_all_used(model, official):
    """Every official key has a place (the normalisation and the loss weight are checked and
    dropped), and nothing of ours is left out."""
    sd = dict(official[0])
    eomt.convert_official_state_dict(model, sd)
    ours = model.state_dict()
    assert sorted(sd) == sorted(ours)
    for k, v in sd.items():
        assert torch.equal(v.double(), ours[k].double()), k


@pytest.mark.parametrize('i', [0, 1])
def test_official_scores(model, golden, i):
    scores = _scores(model, golden, i)
    err64 = (scores - golden['scores_fp64'][i]).abs().max().item()
    err32 = (scores - golden['scores'][i].double()).abs().max().item()
    assert err64 < TOL and err32 < TOL, (err64, err32)


@pytest.mark.parametrize('i', [0, 1])
def test_official_scores_fp32(model32, golden, i):
    scores = _scores(model32, golden, i)
    assert (scores - golden['scores'][i]).abs().max() < TOL


def test_official_per_layer_logits(model, golden):
    """The 5 layers' mask and class logits of batch 0 (one crop per image)."""
    data = model.data_preprocessor(_inputs(golden, 0), training=False)
    with torch.no_grad():
        masks, classes = model.forward_layers(data['inputs'].double(), all_layers=True)
    assert len(masks) == len(classes) == 5
    for layer in range(5):
        assert (masks[layer] - golden['mask_logits'][layer]).abs().max() < TOL
        assert (classes[layer] - golden['class_logits'][0][layer]).abs().max() < TOL


def test_official_unmasked(model32, golden):
    """attn_mask_probs 0 (trained checkpoints) equals the official masked_attn_enabled=False."""
    model = model32
    probs = model.decode_head.attn_mask_probs
    saved = probs.clone()
    try:
        probs.zero_()
        for i in (0, 1):
            err = (_scores(model, golden, i) - golden['scores_unmasked_fp64'][i]).abs().max()
            assert err < TOL
        probs.copy_(saved)
        model.decode_head.masked_attn = False
        err = (_scores(model, golden, 0) - golden['scores_unmasked_fp64'][0]).abs().max()
        assert err < TOL
    finally:
        probs.copy_(saved)
        model.decode_head.masked_attn = True


def test_windows_mode(model32, golden):
    """The official windows on the 128 x 160 image are the fixture's (x = 0 and 32)."""
    assert window_starts(160, 128) == [0, 32]
    assert window_starts(128, 128) == [0]
    assert window_starts(1100, 512) == [0, 294, 588]
    scores = _scores(model32, golden, 1, dict(mode='windows', crop_size=(128, 128)))
    assert (scores - golden['scores_fp64'][1]).abs().max() < TOL


def test_windows_resize_short_side(model32):
    """A 96 x 200 image: short side to 128 (-> 128 x 267), 3 windows, scores at input size."""
    model = model32
    model.test_cfg = Config(dict(mode='windows', crop_size=(128, 128)))
    x = torch.randn(1, 3, 96, 200)
    calls = []
    encode = model.encode_decode

    def spy(inputs, metas):
        calls.append(tuple(inputs.shape))
        return encode(inputs, metas)

    model.encode_decode = spy
    try:
        with torch.no_grad():
            out = model.inference(x, [dict(img_shape=(96, 200), ori_shape=(96, 200))])
    finally:
        del model.encode_decode
    assert out.shape == (1, 19, 96, 200)
    assert calls == [(1, 3, 128, 128)] * 3


@pytest.mark.parametrize('layout', ['flat', 'lightning'])
def test_official_layouts_load(official, layout, tmp_path):
    """The published pytorch_model.bin (bare state dict) and a Lightning .ckpt, both without
    mmseg's meta, load through init_model."""
    from mmseg.apis import init_model
    sd = official[0]
    path = str(tmp_path / 'ckpt')
    if layout == 'flat':
        torch.save(sd, path)
    else:
        torch.save({'state_dict': sd, 'epoch': 3, 'global_step': 100,
                    'pytorch-lightning_version': '2.5.0'}, path)
    m = init_model(CONFIG, path, device='cpu')
    assert torch.equal(m.decode_head.q.weight, sd['network.q.weight'])
    assert torch.equal(m.backbone.trunk.model.blocks[3].attn.qkv.weight,
                       sd['network.encoder.backbone.blocks.3.attn.qkv.weight'])


def test_normalisation_mismatch_refused(official):
    from mmseg.apis import init_model
    with pytest.raises(ValueError, match='pixel_mean'):
        init_model(CONFIG, official[1], device='cpu',
                   cfg_options={'model.data_preprocessor.mean': [0.0, 0.0, 0.0]})


def test_mask_annealing_official_formula():
    """The official LightningModule.mask_annealing, and the hook's iteration count."""

    def official(start, cur, end, power=0.9):
        if cur < start:
            return 1.0
        if cur >= end:
            return 0.0
        return (1.0 - torch.tensor((cur - start) / (end - start))).pow(power).item()

    starts, ends = [6520, 13040, 19560, 26080], [13040, 19560, 26080, 32600]
    for it in (0, 6519, 6520, 6521, 9000, 13039, 13040, 20000, 32599, 32600, 40000):
        for s, e in zip(starts, ends):
            assert abs(mask_annealing(s, e, it) - official(s, it, e)) < 1e-6

    class Runner:
        iter = 9779
        model = type('M', (), {})()

    head = type('H', (), {})()
    head.attn_mask_probs = torch.ones(4)
    Runner.model.decode_head = head
    hook = EoMTMaskAnnealingHook([0, 6520, 9780, 13040], [3000, 9780, 13040, 16300])
    hook.after_train_iter(Runner, 0)
    expected = [official(s, 9780, e) for s, e in zip([0, 6520, 9780, 13040],
                                                     [3000, 9780, 13040, 16300])]
    assert torch.allclose(head.attn_mask_probs, torch.tensor(expected))
    assert expected == [0.0, 0.0, 1.0, 1.0]


def test_checkpoint_round_trip(model32, tmp_path):
    """Our own checkpoint (mmseg keys) loads back exactly."""
    from mmseg.apis import init_model
    path = str(tmp_path / 'ours.pth')
    torch.save({'state_dict': model32.state_dict(), 'meta': {}}, path)
    again = init_model(CONFIG, path, device='cpu')
    for (k, a), (_, b) in zip(model32.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def _toy_batch(model, size=64, classes=4, batch=2):
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 255, (3, size, size), generator=g, dtype=torch.uint8)
              for _ in range(batch)]
    samples = []
    for _ in range(batch):
        seg = torch.randint(0, classes, (1, size // 8, size // 8), generator=g)
        seg = seg.repeat_interleave(8, 1).repeat_interleave(8, 2)
        seg[:, :4] = 255
        s = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        pad_shape=(size, size)))
        s.gt_sem_seg = PixelData(data=seg)
        samples.append(s)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)


def _toy_eomt(**head):
    from mmseg.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    cfg = Config.fromfile(CONFIG).model
    cfg.backbone.trunk.model_kwargs = dict(img_size=64, patch_size=16, embed_dim=32, depth=4,
                                           num_heads=2)
    cfg.data_preprocessor.size = (64, 64)
    cfg.decode_head.update(in_channels=32, num_classes=4, num_queries=6, num_blocks=2,
                           loss_cls=dict(class_weight=[1.0] * 4 + [0.1]),
                           train_cfg=dict(num_points=64), **head)
    return MODELS.build(cfg)


def test_training_step_gradients():
    """Deep supervision over num_blocks + 1 layers; gradients reach the queries, the heads, the
    upscaling and every trunk block."""
    torch.manual_seed(0)
    model = _toy_eomt()
    model.init_weights()
    model.train()
    data = _toy_batch(model)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert {'decode.loss_cls', 'decode.b0.loss_mask', 'decode.b1.loss_dice'} <= set(losses)
    assert len(losses) == 9  # 3 terms x (2 query blocks + the final layer)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_few_iterations_reduce_loss():
    torch.manual_seed(0)
    model = _toy_eomt()
    model.init_weights()
    model.train()
    data = _toy_batch(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(4):
        losses = model.loss(data['inputs'], data['data_samples'])
        total = sum(v for k, v in losses.items() if 'loss' in k)
        first = first if first is not None else total.item()
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < first


def test_attention_mask_layout():
    """Query -> patch entries from the resized logits; all else open; the same for all heads."""
    model = _toy_eomt()
    head = model.decode_head
    logits = torch.randn(2, 6, 16, 16)
    mask = head.attention_mask(logits, (4, 4), 5, 1.0)
    assert mask.shape == (2, 1, 5 + 6 + 16, 5 + 6 + 16)
    expected = torch.nn.functional.interpolate(logits, (4, 4), mode='bilinear').flatten(2) > 0
    assert torch.equal(mask[:, 0, 5:11, 11:], expected)
    mask[:, 0, 5:11, 11:] = True
    assert mask.all()
    assert head.attention_mask(logits, (4, 4), 5, 0.0 + 1e-9)[:, 0, 5:11, 11:].float().mean() > .99


def _toy_vitsplit_eomt(out_indices=(1, 3)):
    from mmseg.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    cfg = Config.fromfile(CONFIG).model
    trunk = cfg.backbone.trunk
    trunk.model_kwargs = dict(img_size=64, patch_size=16, embed_dim=32, depth=4, num_heads=2)
    cfg.backbone = dict(type='ViTSplitEoMTEncoder', trunk=trunk, select_layers=[2, 3],
                        out_indices=list(out_indices))
    cfg.data_preprocessor.size = (64, 64)
    cfg.decode_head.update(in_channels=32, num_classes=4, num_queries=6, num_blocks=2,
                           loss_cls=dict(class_weight=[1.0] * 4 + [0.1]),
                           train_cfg=dict(num_points=64))
    return MODELS.build(cfg)


def test_vitsplit_eomt_trains_only_its_parts():
    """Frozen trunk (no gradient, run without autograd); queries, heads, task head and prior
    head learn."""
    torch.manual_seed(0)
    model = _toy_vitsplit_eomt()
    model.init_weights()
    model.train()
    assert not model.backbone.trunk.training
    data = _toy_batch(model)
    feats, tokens, _ = model.backbone._frozen(data['inputs'])
    assert not tokens.requires_grad and not any(f.requires_grad for f in feats.values())
    losses = model.loss(data['inputs'], data['data_samples'])
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    for name, p in model.named_parameters():
        if name.startswith('backbone.trunk.'):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None, name
    for part in ('decode_head.q.', 'decode_head.class_head.', 'decode_head.mask_head.',
                 'decode_head.upscale.', 'backbone.task_head.', 'backbone.prior_proj.'):
        assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters()
                   if n.startswith(part)), part


def test_vitsplit_eomt_starts_as_eomt_on_the_copied_blocks():
    """Zero-initialised prior projection: at the start, ViT-Split-EoMT is EoMT with the queries in
    the (copied) last blocks of the same trunk."""
    torch.manual_seed(0)
    split = _toy_vitsplit_eomt()
    split.init_weights()
    plain = _toy_eomt()
    plain.backbone.trunk.load_state_dict(split.backbone.trunk.state_dict())
    plain.decode_head.load_state_dict(split.decode_head.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = split.eval().forward_layers(x)
        b = plain.eval().forward_layers(x)
    for u, v in zip(a[0] + a[1], b[0] + b[1]):
        torch.testing.assert_close(u, v)
    baseline = _toy_vitsplit_eomt(out_indices=())  # PMT's frozen-trunk EoMT: no prior head
    assert not hasattr(baseline.backbone, 'prior_head')


def test_official_optimiser_recipe():
    """Layer-wise lr decay as the official configure_optimizers, and the two-stage warm-up as
    the official TwoStageWarmupPolySchedule (written here from tue-mps/eomt)."""
    from mmengine.optim import build_optim_wrapper
    model = _toy_eomt()
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', constructor='EoMTOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        paramwise_cfg=dict(layer_decay=0.8)))
    lrs = {g['name']: g['lr'] for g in wrapper.optimizer.param_groups}
    assert len(lrs) == sum(1 for _ in model.parameters())
    t = 'backbone.trunk.model.'
    assert lrs[t + 'blocks.3.attn.qkv.weight'] == pytest.approx(1e-4)
    assert lrs[t + 'blocks.1.mlp.fc1.bias'] == pytest.approx(1e-4 * 0.8 ** 2)
    for name in ('cls_token', 'reg_token', 'pos_embed', 'patch_embed.proj.weight'):
        assert lrs[t + name] == pytest.approx(1e-4 * 0.8 ** 3)
    for name in (t + 'norm.weight', 'decode_head.q.weight', 'decode_head.upscale.0.conv1.bias'):
        assert lrs[name] == pytest.approx(1e-4)

    def official(step, base, encoder, warmup=(5, 10), total=40, power=0.9):
        non_vit, vit = warmup
        if not encoder:
            if non_vit > 0 and step < non_vit:
                return base * (step / non_vit)
            return base * (1 - max(0, step - non_vit) / max(1, total - non_vit)) ** power
        if step < non_vit:
            return 0
        if step < non_vit + vit:
            return base * ((step - non_vit) / vit)
        adjusted = max(0, step - non_vit - vit)
        return base * (1 - adjusted / max(1, total - non_vit - vit)) ** power

    from mmseg.registry import PARAM_SCHEDULERS
    sched = PARAM_SCHEDULERS.build(dict(type='TwoStageWarmupPolyLR', warmup_iters=(5, 10),
                                        optimizer=wrapper.optimizer, begin=0, end=40))
    groups = wrapper.optimizer.param_groups
    for step in range(40):
        for g in (groups[0], groups[-1]):
            want = official(step, g['initial_lr'], g.get('encoder', False))
            assert g['lr'] == pytest.approx(want, abs=1e-12), (step, g['name'])
        wrapper.optimizer.step()
        sched.step()


def test_masks_of_a_padded_input_cover_the_image():
    """A trunk centre-pads to its patch: the masks are resampled onto the image (a ramp in the
    padded frame's pixel coordinates reads the image's)."""
    from mmseg_custom.models.eomt.segmentor import crop_padding
    hp, wp, h, w = 20, 28, 14, 22
    yy, xx = torch.meshgrid(torch.arange(hp) + .5, torch.arange(wp) + .5, indexing='ij')
    out = crop_padding(torch.stack([xx, yy])[None].double(), (h, w), (hp, wp))
    assert out.shape == (1, 2, h, w)
    yy, xx = torch.meshgrid(torch.arange(h) + .5, torch.arange(w) + .5, indexing='ij')
    torch.testing.assert_close(out[0], torch.stack([xx + 3, yy + 3]).double())


def test_annealing_cut_by_the_end_of_training_is_refused():
    """Training that stops inside a window would leave random masked attention at inference."""
    hook = EoMTMaskAnnealingHook([100, 200], [200, 300])

    class Runner:
        max_iters = 250

    with pytest.raises(ValueError, match=r'stops at iteration 250, inside the annealing window'):
        hook.before_train(Runner)
    for max_iters in (300, 400, 50):  # all windows done, or (a smoke run) none started
        Runner.max_iters = max_iters
        hook.before_train(Runner)

