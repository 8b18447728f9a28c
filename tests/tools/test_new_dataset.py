"""tools/new_dataset.py: each folder layout becomes a config that trains and evaluates (two
iterations at toy width); each kind of bad input stops it with one message naming the files;
nothing in the data folder is ever written."""
import glob
import importlib.util
import os
import os.path as osp
import sys

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLASSES = ['background', 'red thing', 'green thing']
COLOURS = [(0, 0, 0), (200, 30, 30), (30, 200, 30)]
VOID = (255, 255, 255)  # the ignore colour of the colour-coded layout


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tool():
    return load_tool('new_dataset')


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One compute thread, as the launcher tests run (OMP_NUM_THREADS=1): at toy width a second
    OpenMP thread spinning on 2 shared cores costs more than it gives."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sample(rng, size):
    """(RGB image, class-id label) of one picture: a red and a green rectangle on dark noise,
    and a strip of ignore (255) pixels along the top."""
    h, w = size
    label = np.zeros((h, w), np.uint8)
    for cls in (1, 2):
        y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
        label[y:y + rng.integers(8, 14), x:x + rng.integers(8, 14)] = cls
    label[0, :4] = 255
    img = np.array(COLOURS, np.int64)[np.minimum(label, 2)] + rng.integers(0, 40, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), label


def write_pair(img_path, mask_path, img, label, colour=False):
    os.makedirs(osp.dirname(img_path), exist_ok=True)
    os.makedirs(osp.dirname(mask_path), exist_ok=True)
    Image.fromarray(img).save(img_path)
    if colour:
        lut = np.array(COLOURS + [VOID] * (256 - len(COLOURS)), np.uint8)
        Image.fromarray(lut[label]).save(mask_path)
    else:
        Image.fromarray(label).save(mask_path)


def make_layout(root, layout, n=6, seed=0):
    """A small folder of one layout; returns the classes file to pass (or None)."""
    rng = np.random.default_rng(seed)
    sizes = [(48, 48), (48, 64), (40, 56)]
    classes_file = None
    for i in range(n):
        img, label = sample(rng, sizes[i % len(sizes)])
        if layout == 'flat':  # images/ + masks/, no split at all: a seeded val split
            write_pair(f'{root}/images/{i:03d}.jpg', f'{root}/masks/{i:03d}.png', img, label)
        elif layout == 'split_folders':  # images/{train,val} + masks/{train,val}, no classes
            split = 'val' if i >= n - 2 else 'train'
            write_pair(f'{root}/images/{split}/{i:03d}.png', f'{root}/masks/{split}/{i:03d}.png',
                       img, label)
        elif layout == 'split_file':  # TIF images, "<name>_mask.png" masks, train/val lists
            write_pair(f'{root}/images/img{i}.tif', f'{root}/masks/img{i}_mask.png', img, label)
        elif layout == 'colour':  # train/{images,masks} with colour masks, no val folder
            write_pair(f'{root}/train/images/{i:03d}.png', f'{root}/train/masks/{i:03d}.png',
                       img, label, colour=True)
    if layout in ('flat', 'split_file'):
        with open(f'{root}/classes.txt', 'w') as f:
            f.write('\n'.join(CLASSES) + '\n')
    if layout == 'split_file':
        with open(f'{root}/train.txt', 'w') as f:
            f.write(''.join(f'img{i}.tif\n' for i in range(n - 2)))
        with open(f'{root}/val.txt', 'w') as f:
            f.write(''.join(f'img{i}\n' for i in range(n - 2, n)))
    if layout == 'colour':
        classes_file = f'{root}/../palette.txt'
        with open(classes_file, 'w') as f:
            f.write(''.join(f'{name} {r} {g} {b}\n' for name, (r, g, b) in zip(CLASSES, COLOURS)))
            f.write('255 void {} {} {}\n'.format(*VOID))
    return classes_file


def snapshot(root):
    """Every file under root with its size and modification time."""
    return {p: (os.stat(p).st_size, os.stat(p).st_mtime_ns)
            for p in glob.glob(f'{root}/**', recursive=True)}


def run_tool(tool, tmp_path, data, *args):
    return tool.main([str(data), '--out', str(tmp_path / 'out'), '--config-dir',
                      str(tmp_path / 'configs'), *args])


def tiny(config, work_dir, checkpoint=False):
    """The written config at toy width (a random 64-wide trunk of the same depth, no weights
    to fetch) for 2 iterations, validated at the second; as a config file beside it. Without
    ``checkpoint``, no checkpoint is written (each costs seconds of config formatting)."""
    path = osp.join(osp.dirname(config), 'tiny_' + osp.basename(config))
    hook = "dict(interval=2, save_best=None)" if checkpoint else "None"
    with open(path, 'w') as f:
        f.write(f'''_base_ = [{config!r}]
model = dict(
    backbone=dict(trunk=dict(arch=dict(_delete_=True, embed_dims=64, depth=12, num_heads=2,
                                       ffn_type='mlp'),
                             pretrained=None), channels=64),
    decode_head=dict(in_channels=64, channels=64))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(serialize_data=False))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(serialize_data=False))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(checkpoint={hook}, logger=dict(interval=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
visualizer = dict(name={'vis_' + osp.basename(str(work_dir))!r})  # one per run in this process
work_dir = {str(work_dir)!r}
''')
    return path


def launch(monkeypatch, tool_name, *args):
    """``python tools/<tool_name>.py ARGS`` in this process (no second start of torch and mmseg)."""
    monkeypatch.setattr(sys, 'argv', [f'{tool_name}.py', *map(str, args)])
    load_tool(tool_name).main()


def log_of(work_dir):
    """The text of the latest run's log in ``work_dir``."""
    return open(sorted(glob.glob(osp.join(str(work_dir), '*', '*.log')))[-1]).read()


@pytest.mark.parametrize('layout', ['flat', 'split_folders', 'split_file'])
def test_layout_trains_and_evaluates(tool, tmp_path, layout, monkeypatch):
    data = tmp_path / 'data'
    make_layout(str(data), layout)
    before = snapshot(data)
    # 112 px crops (8x8 patches) keep the test fast; the default rule is tested below.
    config = run_tool(tool, tmp_path, data, '--name', layout, '--crop', '112')
    assert snapshot(data) == before  # nothing in DATA_DIR written
    assert osp.basename(config) == f'{layout}_vitsplit_dinov2_s.py'
    cfg = Config.fromfile(config)
    train_ds, val_ds = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    assert train_ds.type == 'BaseSegDataset'
    assert cfg.model.decode_head.num_classes == 3
    expected = CLASSES if layout != 'split_folders' else ['class 0', 'class 1', 'class 2']
    assert list(train_ds.metainfo.classes) == expected
    assert cfg.crop_size == (112, 112) and cfg.model.data_preprocessor.size == (112, 112)
    n_val = {'flat': 1, 'split_folders': 2, 'split_file': 2}[layout]
    work = tmp_path / 'work' / layout
    launch(monkeypatch, 'train', tiny(config, work))
    log = log_of(work)
    assert 'Iter(train) [2/2]' in log and f'Iter(val) [{n_val}/{n_val}]' in log, log[-3000:]
    assert 'per class results' in log and all(f' {c} ' in log for c in expected)
    assert f'Total batch size: 2 = 1 process x 2 images per process' in log


def test_colour_masks_without_val_split_train_test_and_draw(tool, tmp_path, capsys,
                                                          monkeypatch):
    """Colour masks, a palette file and no val folder: converted class-id PNGs outside
    DATA_DIR, a seeded val split; tools/train.py, tools/test.py (per-class IoU under the
    user's names) and tools/image_demo.py (the user's colours) run on the written config."""
    data = tmp_path / 'data'
    palette_file = make_layout(str(data), 'colour')
    before = snapshot(data)
    config = run_tool(tool, tmp_path, data, '--classes', palette_file, '--name', 'My Colours',
                      '--crop', '112')
    out = capsys.readouterr().out
    assert snapshot(data) == before
    assert osp.basename(config) == 'my_colours_vitsplit_dinov2_s.py'
    assert f'Converted 6 masks into class-id PNGs under {tmp_path / "out"}' in out
    assert 'ignore index 255' in out and 'red thing' in out
    converted = sorted(glob.glob(str(tmp_path / 'out' / 'train' / 'masks' / '*.png')))
    assert len(converted) == 6
    ids = np.asarray(Image.open(converted[0]))
    assert ids.ndim == 2 and set(np.unique(ids)) <= {0, 1, 2, 255} and 255 in ids
    cfg = Config.fromfile(config)
    assert [tuple(c) for c in cfg.metainfo.palette] == COLOURS
    for split in ('train', 'val'):
        ann = cfg[f'{split}_dataloader'].dataset.ann_file
        assert ann == str(tmp_path / 'out' / 'splits' / f'{split}.txt')
    assert len(open(ann).read().split()) == 1  # 20 % of 6, at least one

    work = tmp_path / 'work' / 'colour'
    small = tiny(config, work, checkpoint=True)
    launch(monkeypatch, 'train', small)
    ckpt = str(work / 'iter_2.pth')
    launch(monkeypatch, 'test', small, ckpt, '--work-dir', tmp_path / 'test')
    log = log_of(tmp_path / 'test')
    table = log[log.index('per class results'):]
    assert all(f' {name} ' in table for name in CLASSES), log[-3000:]

    overlay = tmp_path / 'overlay.png'
    image = sorted(glob.glob(str(data / 'train' / 'images' / '*.png')))[0]
    load_tool('image_demo').main([small, ckpt, image, '--out', str(overlay), '--device', 'cpu',
                                  '--opacity', '1', '--no-labels'])
    drawn = {tuple(c) for c in np.asarray(Image.open(overlay).convert('RGB')).reshape(-1, 3)}
    assert drawn <= set(COLOURS), drawn


@pytest.mark.parametrize('method, trunk', [
    (m, 'dinov2_s') for m in ('vitsplit', 'rein', 'lora', 'linear', 'finetune')] + [
    ('vitsplit', 'dinov3_s'), ('rein', 'dinov3_s'), ('lora', 'eva02_b')])
def test_every_method_builds_on_the_trunks(tool, tmp_path, method, trunk):
    """The written model builds (on the meta device: no memory, no weights) with the trunk's
    normalisation; only finetune trains the trunk (all but DINOv2's unused mask token)."""
    from mmseg_custom.utils.params import build_on_meta, count_params
    data = tmp_path / 'data'
    make_layout(str(data), 'split_folders', n=3)
    config = run_tool(tool, tmp_path, data, '--method', method, '--trunk', trunk)
    cfg = Config.fromfile(config)
    assert cfg.model.data_preprocessor.mean == tool.TRUNKS[trunk][4]['mean']
    assert cfg.model.decode_head.num_classes == 3
    counts = count_params(build_on_meta(cfg))['all']
    assert (counts['trainable'] > 0.99 * counts['total']) == (method == 'finetune'), counts


@pytest.mark.parametrize('trunk, sides, crop, batch', [
    ('dinov2_s', [48, 40], 224, 8),  # small images: upsampled to 16x16 patches
    ('dinov2_s', [300, 310], 308, 4),  # whole 14-px patches
    ('dinov3_s', [300, 310], 304, 4),  # whole 16-px patches
    ('dinov2_s', [1024, 600], 512, 4),  # the shipped recipes' crop
])
def test_crop_and_schedule_follow_the_images(tool, trunk, sides, crop, batch):
    scan = type('Scan', (), {'sizes': [(s + 10, s) for s in sides]})
    side, _, got_batch, max_iters, warmup = tool.plan(trunk, scan, n_train=3000)
    assert (side, got_batch) == (crop, batch)
    assert max_iters == -(-40 * 3000 // batch // 1000) * 1000 and warmup == 1500
    assert tool.plan(trunk, scan, n_train=10)[3] == 2000
    assert tool.plan(trunk, scan, n_train=10 ** 6)[3] == 40000


def error_of(tool, tmp_path, data, *args):
    before = snapshot(data)
    with pytest.raises(SystemExit) as e:
        run_tool(tool, tmp_path, data, *args)
    assert snapshot(data) == before
    assert not glob.glob(str(tmp_path / 'configs' / '*.py'))
    return str(e.value.code)


def test_images_without_masks_and_masks_without_images_are_listed(tool, tmp_path):
    data = tmp_path / 'data'
    make_layout(str(data), 'flat')
    os.remove(data / 'masks' / '001.png')
    os.rename(data / 'images' / '004.jpg', data / 'images' / 'renamed.jpg')
    message = error_of(tool, tmp_path, data)
    assert f'2 images in {data / "images"} without a mask' in message
    assert '001.jpg' in message and 'renamed.jpg' in message
    assert f'1 mask in {data / "masks"} without an image' in message and '004.png' in message


def test_colours_not_in_the_palette_are_named(tool, tmp_path):
    data = tmp_path / 'data'
    palette_file = make_layout(str(data), 'colour')
    mask = data / 'train' / 'masks' / '002.png'
    rgb = np.asarray(Image.open(mask)).copy()
    rgb[5, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(mask)
    message = error_of(tool, tmp_path, data, '--classes', palette_file)
    assert '1 mask holds colours that are not in the palette' in message
    assert f'{mask} ((1, 2, 3))' in message


def test_class_ids_above_the_class_list_are_named(tool, tmp_path):
    data = tmp_path / 'data'
    make_layout(str(data), 'flat')
    mask = data / 'masks' / '003.png'
    label = np.asarray(Image.open(mask)).copy()
    label[1, 1], label[2, 2] = 3, 7
    Image.fromarray(label).save(mask)
    message = error_of(tool, tmp_path, data)
    assert '1 mask holds class ids beyond the 3 classes of the classes file' in message
    assert f'{mask} (3, 7)' in message


def test_unreadable_files_are_named(tool, tmp_path):
    data = tmp_path / 'data'
    make_layout(str(data), 'split_folders')
    (data / 'images' / 'train' / '001.png').write_bytes(b'not a picture')
    (data / 'masks' / 'val' / '005.png').write_bytes(b'')
    message = error_of(tool, tmp_path, data)
    assert '2 files cannot be read as images' in message
    assert str(data / 'images' / 'train' / '001.png') in message
    assert str(data / 'masks' / 'val' / '005.png') in message


def test_image_and_mask_of_different_sizes_are_named(tool, tmp_path):
    data = tmp_path / 'data'
    make_layout(str(data), 'flat')
    mask = data / 'masks' / '000.png'
    Image.fromarray(np.zeros((47, 48), np.uint8)).save(mask)
    message = error_of(tool, tmp_path, data)
    assert (f'{data / "images" / "000.jpg"} (48x48) and {mask} (48x47)' in message), message


def test_black_and_white_masks_need_binary(tool, tmp_path, capsys):
    """0/255 masks would train one class (255 is the ignore index): refused, and --binary
    reads them as background/foreground."""
    data = tmp_path / 'data'
    make_layout(str(data), 'split_folders')
    for mask in glob.glob(str(data / 'masks' / '*' / '*.png')):
        label = np.asarray(Image.open(mask))
        Image.fromarray(np.where(label == 1, 255, 0).astype(np.uint8)).save(mask)
    assert '--binary' in error_of(tool, tmp_path, data)
    config = run_tool(tool, tmp_path, data, '--binary')
    cfg = Config.fromfile(config)
    assert list(cfg.metainfo.classes) == ['background', 'foreground']
    masks = glob.glob(str(tmp_path / 'out' / 'masks' / '*' / '*.png'))
    assert len(masks) == 6 and all(set(np.unique(Image.open(m))) <= {0, 1} for m in masks)


def test_colour_masks_without_a_palette_list_their_colours(tool, tmp_path):
    data = tmp_path / 'data'
    make_layout(str(data), 'colour')
    message = error_of(tool, tmp_path, data)
    assert 'The masks are colour images, so their classes need a palette' in message
    assert '(200, 30, 30) (6 masks)' in message


def test_nothing_is_written_inside_the_data_folder(tool, tmp_path):
    data = tmp_path / 'data'
    make_layout(str(data), 'colour')
    with pytest.raises(SystemExit, match='is inside DATA_DIR'):
        tool.main([str(data), '--out', str(data / 'converted')])
    assert not (data / 'converted').exists()
