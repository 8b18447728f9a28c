"""ONNX export (mmseg_custom/deploy, tools/export.py): every shipped model family at toy width runs
in onnxruntime (CPU) with the logits of eager PyTorch, and bad requests fail cleanly."""
import importlib.util
import os
import os.path as osp
import re
import runpy
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_custom  # noqa: F401

# Installed by install.sh (requirements.txt); the GPU machine's minimal set has no onnx, and its
# `pytest -m gpu` run collects this module too.
onnx = pytest.importorskip('onnx', reason='onnx is not installed (bash install.sh installs it)')
from mmseg_custom.deploy import (ExportError, check_family, export_onnx, make_session,
                                 read_metadata)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MAX_ABS_ERR = 1e-4
MIN_ARGMAX_AGREEMENT = 0.9999
# The second input size of the dynamic exports: patch multiples at patch 14, off them at 16 (the
# graphs are traced at a size off the patch multiple, export.generic_trace_shape).
SECOND_SIZE = (70, 98)

# (config, dynamic, config overrides): one config per family; the Mask2Former heads, token
# sharing and EVA02's rotary embedding export at a fixed size only (check_family says why). The
# VPT and AdaptFormer adapters run on the LoRA config's linear head, and Rein's DINOv2-L on 6
# blocks: the same code paths, a fraction of the export time. The learnable-gate configs use the
# sparse gate's class (ViTSplitGate).
LORA = 'ade20k/peft/linear_dinov2_lora_small_512_40k_ade20k.py'
EOMT = 'ade20k/eomt/eomt_dinov2_large_512_40k_ade20k.py'
VITSPLIT_EOMT = 'ade20k/vitsplit_eomt/eomt_dinov2_vitsplit_small_512_40k_ade20k.py'
MASK_PROBS = 'attn_mask_probs'  # an override of build_tiny: EoMTHead's buffer, filled with it
FAMILIES = [
    ('ade20k/vitsplit/linear_dinov2_vitsplit_small_512_20k_ade20k.py', True, {}),
    ('ade20k/vitsplit/linear_dinov2_vitsplit_sparsegate_small_512_20k_ade20k.py', True, {}),
    ('ade20k/vitsplit/mask2former_dinov2_vitsplit_small_512_40k_ade20k.py', False, {}),
    ('ade20k/vitsplit_cts/linear_dinov2_vitsplit_cts30_small_512_40k_ade20k.py', False, {}),
    ('ade20k/vitsplit/linear_dinov3_vitsplit_small_512_40k_ade20k.py', True, {}),
    ('ade20k/rein/linear_dinov2_rein_small_512_40k_ade20k.py', True, {}),
    ('gtav/rein/mask2former_dinov2_rein_large_512_40k_gtav.py', False,
     {'model.backbone.trunk.arch.depth': 6, 'model.backbone.out_indices': [1, 2, 3, 5]}),
    (LORA, True, {}),
    (LORA, True, {'model.backbone.adapter': dict(_delete_=True, type='VPTDeep', num_tokens=4)}),
    (LORA, True, {'model.backbone.adapter': dict(_delete_=True, type='AdaptFormerAdapter',
                                                 bottleneck=8)}),
    ('ade20k/baselines/linear_dinov2_frozen_small_512_40k_ade20k.py', True, {}),
    ('ade20k/baselines/linear_dinov3_finetune_small_512_40k_ade20k.py', True, {}),
    ('ade20k/vfm_benchmark/linear_eva02_vitsplit_base_512_40k_ade20k.py', False, {}),
    ('ade20k/vfm_benchmark/linear_siglip2_finetune_base_512_40k_ade20k.py', True, {}),
    # EoMT, trained (attn_mask_probs all 0: no masks), on 6 of DINOv2-L's blocks (4 with queries);
    # ViT-Split-EoMT with its masks on (probabilities 1, as before the annealing: deterministic).
    (EOMT, True, {'model.backbone.trunk.model_kwargs.depth': 6, MASK_PROBS: 0.0}),
    (VITSPLIT_EOMT, True, {MASK_PROBS: 1.0}),
]
IDS = [osp.basename(n)[:-3] + ''.join(f'-{v["type"]}' for v in o.values() if isinstance(v, dict))
       + (f'-masks{o[MASK_PROBS]:g}' if MASK_PROBS in o else '') for n, _, o in FAMILIES]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the exports are tracing-bound, and the tests share 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_tiny(tiny_models, name, num_classes=None, overrides=None):
    """The config's model at toy width, random weights, every zero-initialised weight (deformable
    offsets, LoRA B, adapter up-projections) made non-zero so that its path counts; Mask2Former
    with 3 decoder and 2 pixel-decoder layers (9 and 6 repeat the same layers)."""
    cfg = tiny_models.tiny_config(name, num_classes)
    overrides = dict(overrides or {})
    mask_probs = overrides.pop(MASK_PROBS, None)
    cfg.merge_from_dict(overrides)
    head = cfg.model.decode_head
    if head.type in ('Mask2FormerHead', 'ReinMask2FormerHead'):
        head.transformer_decoder.num_layers = 3
        head.pixel_decoder.encoder.num_layers = 2
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        if mask_probs is not None:
            model.decode_head.attn_mask_probs.fill_(mask_probs)
    return cfg, model.eval()


def compare(model, session, x):
    """Max abs logit error and argmax agreement of onnxruntime against eager encode_decode."""
    size = x.shape[-2:]
    with torch.no_grad():
        ref = model.encode_decode(x, [dict(img_shape=size, pad_shape=size, ori_shape=size)])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    ref = ref.numpy()
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max()), float((got.argmax(1) == ref.argmax(1)).mean())


@pytest.fixture(scope='module')
def exported(tiny_models, tmp_path_factory):
    """``exported(i)``: (cfg, model, ONNX file) of ``FAMILIES[i]``, exported once per module (the
    EoMT windows test reuses the family test's file)."""
    cache = {}

    def get(index):
        if index not in cache:
            name, dynamic, overrides = FAMILIES[index]
            cfg, model = build_tiny(tiny_models, name, overrides=overrides)
            out = str(tmp_path_factory.mktemp('export') / 'model.onnx')
            export_onnx(model, out, (tiny_models.SIZE, tiny_models.SIZE), dynamic=dynamic,
                        verify=False, config_name=name, test_cfg=cfg.model.get('test_cfg'))
            cache[index] = (cfg, model, out)
        return cache[index]
    return get


@pytest.mark.parametrize('index', range(len(FAMILIES)), ids=IDS)
def test_family_exports_and_matches_pytorch(tiny_models, exported, index):
    dynamic = FAMILIES[index][1]
    _, model, out = exported(index)
    size = (tiny_models.SIZE, tiny_models.SIZE)
    proto = onnx.load(out)
    onnx.checker.check_model(proto)
    assert {n.domain for n in proto.graph.node} <= {'', 'ai.onnx'}  # standard ops only
    session = make_session(out, num_threads=1)
    gen = torch.Generator().manual_seed(2)
    inputs = [torch.randn(2, 3, *size, generator=gen)]
    if dynamic:
        inputs.append(torch.randn(1, 3, *SECOND_SIZE, generator=gen))
    for x in inputs:
        err, agree = compare(model, session, x)
        assert err <= MAX_ABS_ERR and agree >= MIN_ARGMAX_AGREEMENT, (tuple(x.shape), err, agree)


def test_eomt_windows_run_through_onnxruntime(exported):
    """EoMT's evaluation windows (test_cfg mode='windows', outside the graph) give with the ONNX
    file what they give with PyTorch: the ONNX segmentor of tools/test.py runs window_inference
    on the session; the metadata records the windows and the scores."""
    from mmseg_custom.deploy import onnx_test_model
    cfg, model, out = exported(IDS.index(next(i for i in IDS if i.startswith('eomt_dinov2_large'))))
    assert model.test_cfg['mode'] == 'windows'
    ort_model = MODELS.build(onnx_test_model(cfg.model, out, num_threads=1))
    meta = read_metadata(out)
    assert meta['windows_inference'] == dict(crop_size=[56, 56]) and 'EoMT' in meta['output']
    assert meta['family'].startswith('EoMTEncoder+no masks/')
    gen = torch.Generator().manual_seed(3)
    for h, w in [(56, 90), (100, 60)]:  # 2 windows along the width, 2 along the height
        x = torch.randn(1, 3, h, w, generator=gen)
        metas = [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))]
        with torch.no_grad():
            ref = model.inference(x, metas).numpy()
        got = ort_model.inference(x, metas).numpy()
        assert got.shape == ref.shape == (1, model.out_channels, h, w)
        assert np.abs(got - ref).max() <= MAX_ABS_ERR
        assert (got.argmax(1) == ref.argmax(1)).mean() >= MIN_ARGMAX_AGREEMENT


def test_eomt_random_masked_attention_is_refused(tiny_models):
    """Masks kept with a probability strictly between 0 and 1 are drawn on every run: refused,
    with the probabilities and what to export instead."""
    _, model = build_tiny(tiny_models, VITSPLIT_EOMT, overrides={MASK_PROBS: 0.0})
    model.decode_head.attn_mask_probs[1] = 0.5
    with pytest.raises(ExportError, match=r'masked attention is random at inference '
                       r'\(attn_mask_probs \[0.0, 0.5, 0.0\].*all 0 or 1'):
        check_family(model)
    model.decode_head.masked_attn = False  # masks switched off: nothing random
    assert check_family(model, dynamic=True)['dynamic_ok']


def test_preprocess_in_graph_equals_mmseg_preprocessor(tiny_models, tmp_path):
    """--with-preprocess: raw uint8 BGR images in, the logits of mmseg's data preprocessor +
    encode_decode out; the metadata describes the file."""
    name = 'ade20k/vitsplit/linear_dinov2_vitsplit_small_512_20k_ade20k.py'
    cfg, model = build_tiny(tiny_models, name)
    pre = cfg.model.data_preprocessor
    out = str(tmp_path / 'raw.onnx')
    export_onnx(model, out, (56, 56), dynamic=True, with_preprocess=True,
                preprocess=dict(mean=pre.mean, std=pre.std, bgr_to_rgb=pre.bgr_to_rgb),
                dataset_meta=dict(classes=[f'c{i}' for i in range(150)],
                                  palette=[[i, i, i] for i in range(150)]),
                config_name=osp.basename(name), verify=False)
    images = np.random.RandomState(0).randint(0, 256, (1, 63, 77, 3)).astype(np.uint8)
    with torch.no_grad():
        data = model.data_preprocessor(
            dict(inputs=[torch.from_numpy(images[0]).permute(2, 0, 1)]), False)
        x = data['inputs']
        ref = model.encode_decode(x, [dict(img_shape=x.shape[-2:])]).numpy()
    session = make_session(out)
    got = session.run(None, {'image': images})[0]
    assert np.abs(got - ref).max() <= MAX_ABS_ERR
    meta = read_metadata(out)
    assert meta['classes'][:2] == ['c0', 'c1'] and meta['palette'][1] == [1, 1, 1]
    assert meta['mean'] == list(pre.mean) and meta['std'] == list(pre.std)
    assert meta['bgr_to_rgb'] is True and meta['with_preprocess'] is True
    assert meta['size_constraints']['dynamic'] is True
    assert meta['size_constraints']['patch_size'] == 14
    assert meta['config'] == osp.basename(name) and 'NHWC uint8' in meta['input_layout']


def test_dynamic_refused_where_the_graph_cannot_follow(tiny_models):
    _, model = build_tiny(tiny_models,
                          'ade20k/vitsplit/mask2former_dinov2_vitsplit_small_512_40k_ade20k.py')
    with pytest.raises(ExportError, match='--dynamic is not possible .*Mask2Former'):
        check_family(model, dynamic=True)


def test_failed_verification_leaves_nothing(tiny_models, tmp_path):
    """A graph that does not pass the check is not written, and no temporary file stays."""
    _, model = build_tiny(tiny_models,
                          'ade20k/baselines/linear_dinov2_frozen_small_512_40k_ade20k.py')
    out = tmp_path / 'model.onnx'
    with pytest.raises(ExportError, match='does not reproduce the PyTorch model'):
        export_onnx(model, str(out), (56, 56), tolerance=-1.0)
    assert os.listdir(tmp_path) == []


def test_unknown_family_and_small_shape_are_refused(tiny_models, tmp_path):
    _, model = build_tiny(tiny_models,
                          'ade20k/baselines/linear_dinov2_frozen_small_512_40k_ade20k.py')
    with pytest.raises(ExportError, match='smaller than one 14-pixel patch'):
        export_onnx(model, str(tmp_path / 'm.onnx'), (10, 56))
    model.decode_head = nn.Identity()
    with pytest.raises(ExportError, match='decode head Identity is not supported'):
        check_family(model)
    assert os.listdir(tmp_path) == []


def test_missing_op_is_named(tmp_path):
    """An op the installed onnxruntime lacks: one error naming it, the file and the fix."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node('NoSuchOp', ['x'], ['y'])], 'g',
        [onnx.helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info('y', onnx.TensorProto.FLOAT, [1])])
    path = str(tmp_path / 'bad.onnx')
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid('', 17)]),
              path)
    with pytest.raises(ExportError, match='has no kernel for NoSuchOp') as e:
        make_session(path)
    assert path in str(e.value)


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'tool_{name}',
                                                  osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def trained(tiny_models, tmp_path):
    """(config file, checkpoint) of the demo ViT-Split at toy width, 3 classes, on a 2-image
    validation set written to tmp_path."""
    cfg, model = build_tiny(tiny_models, 'demo/vitsplit_tiny_shapes.py', num_classes=3)
    rng = np.random.RandomState(0)
    root = tmp_path / 'data'
    for sub in ('img', 'ann'):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        label = np.zeros((56, 70), np.uint8)
        label[10:30, 5:40], label[35:50, 30:65] = 1, 2
        img = np.clip(label[..., None] * 80 + rng.randint(0, 60, (56, 70, 3)), 0, 255)
        Image.fromarray(img.astype(np.uint8)).save(root / 'img' / f'{i}.png')
        Image.fromarray(label).save(root / 'ann' / f'{i}.png')
    metainfo = dict(classes=('background', 'one', 'two'),
                    palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0]])
    dataset = dict(type='BaseSegDataset', data_root=str(root), metainfo=metainfo,
                   img_suffix='.png', seg_map_suffix='.png',
                   data_prefix=dict(img_path='img', seg_map_path='ann'),
                   pipeline=cfg.test_pipeline)
    cfg.test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                               sampler=dict(type='DefaultSampler', shuffle=False),
                               dataset=dataset)
    cfg.test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
    cfg.work_dir = str(tmp_path / 'work')
    config = str(tmp_path / 'tiny_vitsplit.py')
    cfg.dump(config)
    checkpoint = str(tmp_path / 'tiny.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=metainfo)), checkpoint)
    return config, checkpoint, root


def run_test_tool(config, checkpoint, work_dir, name, monkeypatch, capfd):
    """tools/test.py CONFIG CHECKPOINT as from the command line, in this process (a subprocess
    would import torch and mmseg again: 8 s); its mIoU line."""
    monkeypatch.setattr(sys, 'argv', ['tools/test.py', config, checkpoint, '--work-dir', work_dir,
                                      '--cfg-options', f'experiment_name={name}'])
    capfd.readouterr()
    runpy.run_path(osp.join(REPO, 'tools', 'test.py'), run_name='__main__')
    output = capfd.readouterr()
    found = re.findall(r'mIoU: ([\d.]+)', output.out + output.err)
    assert found, (output.out + output.err)[-3000:]
    return found[-1]


def test_tools_export_test_and_demo_on_an_onnx_file(trained, tmp_path, monkeypatch, capfd):
    """tools/export.py writes a verified file with the checkpoint's classes; tools/test.py gives
    the PyTorch model's mIoU with it; tools/image_demo.py segments with it as with PyTorch."""
    config, checkpoint, root = trained
    out = str(tmp_path / 'tiny.onnx')
    report = load_tool('export').main([config, checkpoint, '--out', out, '--dynamic'])
    assert all(c['max_abs_err'] <= MAX_ABS_ERR for c in report['checks'])
    assert read_metadata(out)['classes'] == ['background', 'one', 'two']

    demo = load_tool('image_demo')
    img = str(root / 'img' / '0.png')
    onnx_result = demo.main([config, out, img, '--out', str(tmp_path / 'o.png'), '--device',
                             'cpu'])
    torch_result = demo.main([config, checkpoint, img, '--out', str(tmp_path / 't.png'),
                              '--device', 'cpu'])
    assert osp.isfile(tmp_path / 'o.png')
    assert torch.equal(onnx_result.pred_sem_seg.data, torch_result.pred_sem_seg.data)

    monkeypatch.chdir(tmp_path)
    mious = [run_test_tool(config, ckpt, str(tmp_path / f'work_{name}'), name, monkeypatch, capfd)
             for ckpt, name in ((out, 'onnx'), (checkpoint, 'pth'))]
    assert mious[0] == mious[1]


def test_export_tool_refuses_a_checkpoint_that_does_not_fit(tiny_models, trained, tmp_path):
    config, _, _ = trained
    _, other = build_tiny(tiny_models, 'demo/vitsplit_tiny_shapes.py', num_classes=5)
    wrong = str(tmp_path / 'five_classes.pth')
    torch.save(dict(state_dict=other.state_dict()), wrong)
    out = tmp_path / 'model.onnx'
    with pytest.raises(SystemExit, match='decode_head.conv_seg.weight') as e:
        load_tool('export').main([config, wrong, '--out', str(out)])
    assert wrong in str(e.value)
    assert not out.exists()


@pytest.mark.parametrize('antialias', [False, True])
@pytest.mark.parametrize('in_len, out_len, scale_factor', [
    (8, 13, None), (8, 5, None), (8, 8, None), (8, 10, 10.1 / 8), (37, 36, 36.1 / 37)])
def test_resize_matrix_is_pytorchs_bicubic(antialias, in_len, out_len, scale_factor):
    """The traced path of position-embedding interpolation computes F.interpolate's bicubic
    (size= or scale_factor=, with and without antialiasing) as M @ grid @ M^T."""
    import torch.nn.functional as F

    from mmseg_custom.models.pos_resize import cubic_resize_matrix
    x = torch.randn(3, in_len, in_len, generator=torch.Generator().manual_seed(0))
    kwargs = (dict(scale_factor=(scale_factor, scale_factor)) if scale_factor
              else dict(size=(out_len, out_len)))
    ref = F.interpolate(x[None], mode='bicubic', antialias=antialias, **kwargs)[0]
    in_per_out = 1 / scale_factor if scale_factor else in_len / out_len
    m = cubic_resize_matrix(out_len, in_len, in_per_out, antialias)
    assert torch.allclose(m @ x @ m.T, ref, atol=1e-5)


@pytest.mark.parametrize('registers', [0, 4])  # offset 0.1 bicubic; antialiased, no offset
def test_traced_position_encodings_equal_the_eager_ones(registers):
    """What the trunks compute while tracing (pos_resize's matrices) equals their eager position
    embeddings: DINOv2's (the stored grid, one axis of stored length, up and down) and timm's
    ``resample_abs_pos_embed``."""
    from timm.layers import resample_abs_pos_embed

    from mmseg_custom.models.pos_resize import resample_abs_pos_embed as traceable
    trunk = MODELS.build(dict(type='DINOv2', arch=dict(embed_dims=32, depth=1, num_heads=2,
                                                       ffn_type='mlp'),
                              img_size=112, num_register_tokens=registers))
    with torch.no_grad():
        trunk.pos_embed.normal_(generator=torch.Generator().manual_seed(0))
        for h, w in [(8, 8), (8, 5), (11, 8), (3, 13)]:
            assert torch.allclose(trunk._traced_pos_encoding(h, w, torch.float32),
                                  trunk.interpolate_pos_encoding(h, w, torch.float32),
                                  atol=1e-5), (h, w)
            pos = trunk.pos_embed
            assert torch.allclose(traceable(pos, (h, w), (8, 8), num_prefix_tokens=1),
                                  resample_abs_pos_embed(pos, (h, w), (8, 8)), atol=1e-5), (h, w)
