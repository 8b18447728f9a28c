"""The EoMT demos: configs/demo/{vitsplit_eomt,eomt}_tiny_shapes_pretrained.py train and evaluate,
ViT-Split-EoMT trains no trunk parameter, and ``tools/demo.py --head eomt`` runs end to end."""
import importlib.util
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from mmseg_custom.utils.schedule import scale_schedule

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'tools', 'demo.py')
CONFIGS = osp.join(REPO, 'configs', 'demo')
VITSPLIT_EOMT = osp.join(CONFIGS, 'vitsplit_eomt_tiny_shapes_pretrained.py')
EOMT = osp.join(CONFIGS, 'eomt_tiny_shapes_pretrained.py')

pytest.importorskip('mmdet')


def _demo():
    spec = importlib.util.spec_from_file_location('demo_tool', DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    from mmseg_custom.datasets import generate_dataset
    root = str(tmp_path_factory.mktemp('shapes'))
    generate_dataset(root, num_train=4, num_val=2, verbose=False, workers=1)
    return root


def test_demo_configs_are_the_issue_s_models():
    split, eomt = Config.fromfile(VITSPLIT_EOMT), Config.fromfile(EOMT)
    base = Config.fromfile(osp.join(CONFIGS, 'vitsplit_tiny_shapes_pretrained.py'))
    for cfg in (split, eomt):
        assert cfg.model.type == 'EoMT' and 'mmseg_custom.models.eomt' in cfg.custom_imports.imports
        assert cfg.model.backbone.trunk == base.model.backbone.trunk  # the same pretrained trunk
        assert cfg.model.decode_head.type == 'EoMTHead' and cfg.model.decode_head.num_classes == 6
        assert cfg.model.test_cfg == dict(mode='whole')
        assert cfg.train_dataloader == base.train_dataloader  # inherited, not copied
        (anneal, ) = [h for h in cfg.custom_hooks if h.type == 'EoMTMaskAnnealingHook']
        assert len(anneal.start_iters) == cfg.model.decode_head.num_blocks
        assert max(anneal.end_iters) < cfg.train_cfg.max_iters
    assert split.model.backbone.type == 'ViTSplitEoMTEncoder'
    assert split.model.backbone.select_layers == [3, 4, 5]
    assert split.model.backbone.out_indices == [0, 1, 2]
    assert eomt.model.backbone.type == 'EoMTEncoder'
    assert eomt.optim_wrapper.paramwise_cfg.custom_keys == {'backbone.trunk': {'lr_mult': 0.1}}


def _runner(config, data_root, work_dir, iters=2):
    from mmseg_custom.engine import PortableRunner
    cfg = Config.fromfile(config)
    cfg.work_dir = str(work_dir)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
        cfg[loader].batch_size = 2
    scale_schedule(cfg, iters)
    cfg.train_cfg.val_interval = iters
    cfg.visualizer.name = f'visualizer_{osp.basename(config)}'
    return PortableRunner.from_cfg(cfg)


@pytest.mark.parametrize('config', [VITSPLIT_EOMT, EOMT], ids=['vitsplit_eomt', 'eomt'])
def test_demo_config_trains_two_iterations_and_evaluates(config, tiny_data, tmp_path):
    from mmengine.hooks import Hook
    runner = _runner(config, tiny_data, tmp_path)
    model = runner.model
    trunk = {}

    class Snapshot(Hook):  # the trunk once its pretrained weights are loaded (train() does it)
        def before_train(self, runner):
            trunk.update((n, p.detach().clone())
                         for n, p in model.backbone.trunk.named_parameters())

    runner.register_hook(Snapshot())
    runner.train()
    assert trunk
    metrics = runner.test()
    assert 0 <= metrics['mIoU'] <= 100
    # the annealing ran: at iteration 2 of 2 every query block is past its (scaled) window
    assert model.decode_head.attn_mask_probs.tolist() == [0.0, 0.0, 0.0]
    changed = {n for n, p in model.backbone.trunk.named_parameters()
               if not torch.equal(p.detach(), trunk[n])}
    if config == VITSPLIT_EOMT:
        assert not changed  # frozen
    else:
        assert any('blocks.5.' in n for n in changed)  # fine-tuned


def test_vitsplit_eomt_demo_trains_no_trunk_parameter():
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_custom.models.eomt  # noqa: F401
    init_default_scope('mmseg')
    cfg = Config.fromfile(VITSPLIT_EOMT)
    model = MODELS.build(cfg.model)
    model.init_weights()
    trunk = [n for n, p in model.named_parameters() if n.startswith('backbone.trunk.')]
    assert trunk and not any(p.requires_grad for p in model.backbone.trunk.parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    parts = ('backbone.task_head.', 'backbone.prior_head.', 'backbone.prior_proj.',
             'decode_head.')
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(parts)}
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    blocks = sum(p.numel() for p in model.backbone.task_head.parameters())
    assert blocks == sum(p.numel() for i in (3, 4, 5)
                         for p in model.backbone.trunk.blocks[i].parameters())
    assert count == blocks + sum(p.numel() for n, p in model.named_parameters()
                                 if n.startswith(parts[1:]))
    # the copies start as the pretrained blocks, and a training step leaves the trunk alone
    assert torch.equal(model.backbone.task_head[0].mlp.fc1.weight,
                       model.backbone.trunk.blocks[3].mlp.fc1.weight)
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(112, 112), ori_shape=(112, 112),
                                        pad_shape=(112, 112)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 6, (1, 8, 8), generator=g)
                                 .repeat_interleave(14, 1).repeat_interleave(14, 2))
        samples.append(s)
    inputs = [torch.randint(0, 255, (3, 112, 112), generator=g, dtype=torch.uint8)
              for _ in range(2)]
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)
    model.train()
    losses = model.loss(data['inputs'], data['data_samples'])
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert all(p.grad is None for p in model.backbone.trunk.parameters())
    assert all(p.grad is not None for p in model.backbone.task_head.parameters())


def test_demo_head_option_picks_the_config_and_refuses_what_does_not_run(capsys):
    demo = _demo()
    args = demo.parse_args(['--head', 'eomt'])
    assert args.config == VITSPLIT_EOMT and args.work_dir == 'work_dirs/demo_eomt'
    cfg = demo.build_config(args)
    assert cfg.model.backbone.trunk.pretrained.endswith('assets/dinov2_tiny_pretext.safetensors')
    random = demo.build_config(demo.parse_args(['--head', 'eomt', '--trunk', 'dinov2']))
    assert random.model.backbone.trunk.pretrained is None
    assert random.optim_wrapper.paramwise_cfg.custom_keys['backbone.task_head'].lr_mult == 1.0
    assert demo.parse_args([]).config == demo.DEFAULT_CONFIG  # linear: today's demo
    for argv, message in ((['--head', 'eomt', '--trunk', 'dinov3'],
                           '--head eomt runs on --trunk dinov2-pretrained or dinov2; there is no '
                           'EoMT demo config for --trunk dinov3'),
                          (['--head', 'eomt', '--cts'],
                           'token sharing is not implemented for the EoMT encoders'),
                          (['--head', 'eomt', '--trunk', 'dinov2', '--config', VITSPLIT_EOMT],
                           'sets its own trunk: give one of the two')):
        with pytest.raises(SystemExit) as exit_:
            demo.parse_args(argv)
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow  # two processes importing mmseg: a minute or two on 2 loaded cores
def test_demo_head_eomt_end_to_end(tmp_path):
    import cv2
    work_dir, data_root = tmp_path / 'work', tmp_path / 'data'
    proc = subprocess.run(
        [sys.executable, DEMO, '--head', 'eomt', '--iters', '2', '--work-dir', str(work_dir),
         '--data-root', str(data_root), '--num-train', '8', '--num-val', '4',
         '--num-overlays', '2'], cwd=REPO, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    summary = json.loads((work_dir / 'summary.json').read_text())
    assert summary['head'] == 'eomt' and summary['iters'] == 2
    assert osp.basename(summary['config']) == osp.basename(VITSPLIT_EOMT)
    assert len(summary['overlays']) == 2 and summary['loss'] and summary['val_mIoU']
    for path in summary['overlays'] + [summary['curves']]:
        assert cv2.imread(path) is not None, path
    assert 'Demo finished' in out and 'per class results' in out
    hint = next(ln.strip() for ln in out.splitlines() if 'tools/image_demo.py' in ln)
    assert summary['config'] in hint and summary['checkpoint'] in hint
    overlay = tmp_path / 'overlay.png'
    image = data_root / 'img_dir' / 'val' / '00001.png'
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'image_demo.py'), summary['config'],
         summary['checkpoint'], str(image), '--out', str(overlay), '--device', 'cpu'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert cv2.imread(str(overlay)).shape[:2] == cv2.imread(str(image)).shape[:2]
