"""Check a folder of your own images and masks and write a ready training config for it.

    python tools/new_dataset.py DATA_DIR [--name NAME] [--classes classes.txt]
        [--trunk dinov2_s|dinov2_b|...] [--method vitsplit|rein|lora|linear|finetune]

Layouts: ``images/`` + ``masks/`` (a mask has its image's name; optional ``train.txt``/``val.txt``
split files, otherwise a seeded val split), ``images/{train,val}`` + ``masks/{train,val}``, or
``{train,val}/images`` + ``{train,val}/masks``. Masks are PNG label maps of class ids (255 =
ignore), or colour images with a palette in the classes file (``name R G B`` lines). Every
pair is checked; class pixel frequencies are reported; the config is written to
``configs/custom/<name>_<method>_<trunk>.py``. Nothing in DATA_DIR is written: colour masks
are converted into class-id PNGs under ``--out`` (``data/<name>/``), with the split files.
See docs/custom_data.md.
"""
import argparse
import datetime
import os
import os.path as osp
import re
import shlex
import statistics
import sys

import mmseg_custom  # noqa: F401 (registers the data set and model types the check builds)
from mmseg_custom.datasets.custom_folder import (IGNORE_INDEX, DataError, convert_masks,
                                                 find_splits, read_classes, scan_pairs)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
IMAGENET = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
CLIP = dict(mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323])
# name -> the trunk as the shipped configs build it: config dict, width, depth, patch, mean/std.
TRUNKS = {
    'dinov2_s': ("dict(type='DINOv2', arch='small', num_register_tokens=0, pretrained='small')",
                 384, 12, 14, IMAGENET, 'DINOv2-S/14'),
    'dinov2_b': ("dict(type='DINOv2', arch='base', num_register_tokens=0, pretrained='base')",
                 768, 12, 14, IMAGENET, 'DINOv2-B/14'),
    'dinov2_l': ("dict(type='DINOv2', arch='large', num_register_tokens=0, pretrained='large')",
                 1024, 24, 14, IMAGENET, 'DINOv2-L/14'),
    'dinov2_g': ("dict(type='DINOv2', arch='giant', num_register_tokens=0, pretrained='giant')",
                 1536, 40, 14, IMAGENET, 'DINOv2-g/14'),
    'dinov3_s': ("dict(type='TimmViT', name='vit_small_patch16_dinov3', "
                 "pretrained='dinov3_small')", 384, 12, 16, IMAGENET, 'DINOv3-S/16 (timm)'),
    'dinov3_b': ("dict(type='TimmViT', name='vit_base_patch16_dinov3', "
                 "pretrained='dinov3_base')", 768, 12, 16, IMAGENET, 'DINOv3-B/16 (timm)'),
    'dinov3_l': ("dict(type='TimmViT', name='vit_large_patch16_dinov3', "
                 "pretrained='dinov3_large')", 1024, 24, 16, IMAGENET, 'DINOv3-L/16 (timm)'),
    'clip_b': ("dict(type='TimmViT', name='vit_base_patch16_clip_224.openai', pretrained='timm')",
               768, 12, 16, CLIP, 'CLIP-B/16 (OpenAI, timm)'),
    'siglip2_b': ("dict(type='TimmViT', name='vit_base_patch16_siglip_224.v2_webli', "
                  "pretrained='timm')", 768, 12, 16,
                  dict(mean=[127.5] * 3, std=[127.5] * 3), 'SigLIP2-B/16 (timm)'),
    'eva02_b': ("dict(type='TimmViT', name='eva02_base_patch16_clip_224.merged2b', "
                "pretrained='timm')", 768, 12, 16, CLIP, 'EVA02-CLIP-B/16 (timm)'),
}
METHODS = {
    'vitsplit': 'ViT-Split (frozen trunk, trainable task head of its last blocks, prior head)',
    'rein': 'Rein (frozen trunk, LoRA Reins after every block), linear head',
    'lora': 'LoRA (peft, rank 8 on the attention projections; frozen trunk), linear head',
    'linear': 'frozen trunk + linear head (linear probe)',
    'finetune': 'full fine-tuning (trunk at 0.1x lr) + linear head',
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Check a folder of images and masks and write a training config for it '
        '(docs/custom_data.md).')
    parser.add_argument('data_dir', metavar='DATA_DIR',
                        help='folder with images/ and masks/ (or train/ and val/ with both)')
    parser.add_argument('--name', help='data set name (default: the folder\'s name)')
    parser.add_argument('--classes', metavar='FILE',
                        help='class names, one a line in id order, optionally "name R G B" '
                        '(the palette; needed for colour masks); default: DATA_DIR/classes.txt '
                        'when there, else "class 0", "class 1", ...')
    parser.add_argument('--trunk', default='dinov2_s', choices=sorted(TRUNKS),
                        help='frozen trunk (default dinov2_s)')
    parser.add_argument('--method', default='vitsplit', choices=list(METHODS),
                        help='method on the trunk (default vitsplit)')
    parser.add_argument('--crop', type=int, metavar='SIDE',
                        help='crop side in px (default: from the images\' size, 224 to 512)')
    parser.add_argument('--binary', action='store_true',
                        help='masks are 0 (background) and one other value, e.g. 255 (object)')
    parser.add_argument('--train-list', metavar='FILE', help='split file of the train images '
                        '(default: train.txt in DATA_DIR or DATA_DIR/splits)')
    parser.add_argument('--val-list', metavar='FILE', help='split file of the val images')
    parser.add_argument('--val-fraction', type=float, default=0.2,
                        help='share of the pairs drawn for val when there is no val split')
    parser.add_argument('--seed', type=int, default=0, help='seed of that draw')
    parser.add_argument('--out', metavar='DIR',
                        help='where converted masks and split files go (default data/NAME)')
    parser.add_argument('--config-dir', metavar='DIR', default=osp.join(REPO, 'configs', 'custom'),
                        help='where the config is written (default configs/custom)')
    parser.add_argument('--force', action='store_true', help='overwrite an existing config')
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error('--val-fraction must be between 0 and 1')
    if args.crop is not None and args.crop < 2 * TRUNKS[args.trunk][3]:
        parser.error(f'--crop must be at least two patches ({2 * TRUNKS[args.trunk][3]} px)')
    return args


def _inside(path, folder):
    path, folder = osp.realpath(path), osp.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def _fmt_pct(part, whole):
    return f'{100 * part / whole:5.1f}' if whole else '    -'


def report(args, layout, scan, name):
    """Print the layout, the splits, image sizes, the classes' pixel frequencies and the
    ignore label's share."""
    print(f'Data set "{name}" in {args.data_dir}')
    print(f'  layout: {layout.description}')
    for note in layout.notes:
        print(f'  note: {note}')
    n_train, n_val = (len(layout.splits[s].pairs) for s in ('train', 'val'))
    shorts = sorted(min(s) for s in scan.sizes)
    ws, hs = [s[0] for s in scan.sizes], [s[1] for s in scan.sizes]
    print(f'  {n_train} train and {n_val} val pairs; images {min(ws)}-{max(ws)} x '
          f'{min(hs)}-{max(hs)} px (median short side {statistics.median(shorts):.0f} px)')
    kind = {'ids': 'class-id label maps', 'gray-rgb': 'class ids saved as grey RGB images',
            'colour': 'colour-coded (palette of the classes file)'}[scan.kind]
    binary = ', --binary: 0 background, other values foreground' if args.binary else ''
    print(f'  masks: {kind}{binary}')
    train, val = scan.pixels['train'], scan.pixels['val']
    n = len(scan.classes)
    lab_train, lab_val = train[:n].sum(), val[:n].sum()
    width = max(12, max(len(c) for c in scan.classes))
    print(f'  {len(scan.classes)} classes, share of the labelled pixels (palette: '
          f'{scan.palette_source}):')
    print(f'    {"id":>3}  {"class":<{width}}  {"train %":>7}  {"val %":>6}  '
          f'{"images (train+val)":>18}  colour')
    for i, cls in enumerate(scan.classes):
        imgs = f'{scan.images_with["train"][i]}+{scan.images_with["val"][i]}'
        print(f'    {i:>3}  {cls:<{width}}  {_fmt_pct(train[i], lab_train):>7}  '
              f'{_fmt_pct(val[i], lab_val):>6}  {imgs:>18}  {tuple(scan.palette[i])}')
    total = train.sum() + val.sum()
    ignored = train[IGNORE_INDEX] + val[IGNORE_INDEX]
    print(f'  ignore index {IGNORE_INDEX}: {ignored} pixels ({100 * ignored / total:.1f} % of '
          'all); they count in neither the loss nor the mIoU')
    absent_train = [c for i, c in enumerate(scan.classes) if train[i] == 0]
    absent_val = [c for i, c in enumerate(scan.classes) if val[i] == 0]
    if absent_train:
        print(f'  warning: never in a train mask (cannot be learned): {", ".join(absent_train)}')
    if absent_val:
        print(f'  warning: never in a val mask (IoU "nan", left out of the mIoU): '
              f'{", ".join(absent_val)}')


def plan(trunk, scan, n_train, crop=None):
    """(side, median short side, batch, max_iters, warmup) for the images' size and count."""
    patch = TRUNKS[trunk][3]
    median_short = statistics.median(min(s) for s in scan.sizes)
    # 512: the shipped recipes' crop; 224 (16x16 or 14x14 patches) at least, so small images
    # are upsampled to a grid the trunk's features resolve; in between, whole patches.
    side = 512 if median_short >= 512 else max(224, int(round(median_short / patch)) * patch)
    side = crop or side
    batch = 8 if side <= 256 else 4
    # ~40 passes over the train images, 2k..40k iterations (ADE20K's 20k images: 40k).
    max_iters = min(40000, max(2000, -(-40 * n_train // batch // 1000) * 1000))
    warmup = min(1500, max_iters // 10)
    return side, median_short, batch, max_iters, warmup


def backbone_text(method, trunk):
    """(model base file, backbone dict text, lr, optimizer extras text)."""
    trunk_text, width, depth, _, _, _ = TRUNKS[trunk]
    timm = 'TimmViT' in trunk_text
    small = width == 384
    if method == 'vitsplit':
        if depth == 40:  # ViT-Split-G as shipped (configs/ade20k/vitsplit/*giant*)
            out, select = [27, 27] + list(range(28, 40)), list(range(32, 40))
        elif depth == 24:
            out, select = list(range(2, 24, 3)), [20, 21, 22, 23]
        else:
            out, select = [2, 5, 8, 11], [9, 10, 11]
        base = 'vitsplit_linear_timm.py' if timm else 'vitsplit_linear.py'
        text = (f"dict(\n        _delete_=True,\n        type='ViTSplit',\n"
                f"        trunk={trunk_text},\n        out_indices={out},\n"
                f"        # the task head: trainable copies of these last blocks (0.1x lr)\n"
                f"        select_layers={select},\n        channels={width})")
        return base, text, 3e-4 if small else 2e-4, ''
    last = depth - 1
    if method in ('linear', 'finetune'):
        base = 'timm_linear.py' if timm else 'dinov2_linear.py'
        kind = 'PlainBackbone' if timm else 'DINOv2Backbone'
        frozen = method == 'linear'
        text = (f"dict(\n        _delete_=True,\n        type='{kind}',\n"
                f"        trunk={trunk_text},\n        out_indices=[{last}],\n"
                f"        frozen={frozen})")
        extra = ("" if frozen else
                 "\n    paramwise_cfg=dict(custom_keys={'backbone.trunk': dict(lr_mult=0.1)}),")
        return base, text, 2e-4, extra
    if method == 'rein':
        text = (f"dict(\n        _delete_=True,\n        type='ReinBackbone',\n"
                f"        trunk={trunk_text},\n"
                f"        reins=dict(type='LoRAReins', token_length=100, lora_dim=16, "
                f"link_token_to_query=False),\n        out_indices=[{last}])")
        return 'vitsplit_linear.py', text, 3e-4 if small else 2e-4, ''
    # EVA02's attention has separate q/k/v projections; the others one fused qkv.
    targets = ['q_proj', 'k_proj', 'v_proj'] if 'eva02' in trunk else ['qkv']
    text = (f"dict(\n        _delete_=True,\n        type='PEFTBackbone',\n"
            f"        trunk={trunk_text},\n"
            f"        adapter=dict(type='LoRAAdapter', r=8, lora_alpha=8, "
            f"target_modules={targets}),\n        out_indices=[{last}])")
    # Frozen weights inside the LoRA-wrapped layers stay out of the optimizer.
    return 'vitsplit_linear.py', text, 3e-4, "\n    constructor='PEFTOptimWrapperConstructor',"


def split_text(split, data_dir, out_dir, layout, scan):
    """The dataset fields of one split: prefixes, ann_file, suffixes."""
    sp = layout.splits[split]
    seg = osp.join(out_dir, sp.mask_dir) if scan.convert else sp.mask_dir
    ann = '' if sp.from_folder else osp.join(out_dir, 'splits', f'{split}.txt')
    suffix = '.png' if scan.convert else layout.seg_map_suffix
    return (f"dict(\n        data_root=data_root,\n        metainfo=metainfo,\n"
            f"        data_prefix=dict(img_path={sp.img_dir!r}, seg_map_path={seg!r}),\n"
            f"        ann_file={ann!r},\n        img_suffix={layout.img_suffix!r},\n"
            f"        seg_map_suffix={suffix!r},\n")


def config_text(args, name, layout, scan, out_dir, config_dir, command):
    trunk_text, width, depth, patch, norm, trunk_name = TRUNKS[args.trunk]
    n_train, n_val = (len(layout.splits[s].pairs) for s in ('train', 'val'))
    side, median_short, batch, max_iters, warmup = plan(args.trunk, scan, n_train, args.crop)
    base_model, backbone, lr, optim_extra = backbone_text(args.method, args.trunk)
    bases = osp.join(REPO, 'configs', '_base_')
    if _inside(config_dir, REPO):
        bases = osp.relpath(bases, config_dir)
    interval = max(100, max_iters // 10)
    stride = side * 2 // 3
    grid = -(-side // patch)
    data_dir = osp.abspath(args.data_dir)
    classes = ''.join(f'        {c!r},  # {i}\n' for i, c in enumerate(scan.classes))
    palette = ''.join(f'        {list(map(int, rgb))},  # {c}\n'
                      for c, rgb in zip(scan.classes, scan.palette))
    converted = ''
    if scan.convert:
        dirs = sorted({osp.join(out_dir, sp.mask_dir) for sp in layout.splits.values()})
        converted = ('\n# Masks: class-id PNGs the tool converted from the masks in data_root, in'
                     + ''.join(f'\n#   {d}' for d in dirs)
                     + '\n# (run the tool again, with --force, after changing your masks).')
    return f'''# Own data "{name}": {METHODS[args.method]}
# on {trunk_name}; {len(scan.classes)} classes, {n_train} train / {n_val} val images
# ({layout.description}).
# Written on {datetime.date.today().isoformat()} by:
#   {command}
# Edit freely: the comments name what to change.
_base_ = [
    '{bases}/models/{base_model}',
    '{bases}/datasets/custom_folder.py',
    '{bases}/default_runtime.py',
    '{bases}/schedules/vitsplit_40k.py',
]
# ---- data: the folder, the classes (ids; {IGNORE_INDEX} = ignore) and their colours ----
data_root = {data_dir!r}  # moved the data? change this{converted}
metainfo = dict(
    classes=(
{classes}    ),
    # RGB per class: tools/test.py --show-dir and tools/image_demo.py draw with these
    palette=[
{palette}    ])
# Crop: the images' median short side is {median_short:.0f} px; they are resized to a short
# side of {side} px ({grid}x{grid} patches of {patch} px in a crop). Larger crops see more
# context and cost more: change crop_size and img_scale together.
crop_size = ({side}, {side})
img_scale = ({4 * side}, {side})  # (longest, shortest) side after resizing, keeping the aspect
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),  # remove for data where left and right differ
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(img_scale[0] * r), int(img_scale[1] * r)),
                  keep_ratio=True) for r in [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]],
            [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
             dict(type='RandomFlip', prob=1.0, direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]
train_dataloader = dict(
    batch_size={batch},  # per GPU; lower it if memory runs out (and the lr below with it)
    dataset={split_text('train', data_dir, out_dir, layout, scan)}        pipeline=train_pipeline))
val_dataloader = dict(
    dataset={split_text('val', data_dir, out_dir, layout, scan)}        pipeline=test_pipeline))
test_dataloader = val_dataloader  # a test split of your own: copy val_dataloader, change the paths

# ---- model ----
model = dict(
    data_preprocessor=dict(
        size=crop_size,
        # {trunk_name}'s own input normalisation (RGB mean and std of its pretraining)
        mean={norm['mean']},
        std={norm['std']}),
    backbone={backbone},
    decode_head=dict(in_channels={width}, channels={width}, num_classes={len(scan.classes)}),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=({stride}, {stride})))

# ---- schedule: ~40 passes over the {n_train} train images, at least 2000 iterations ----
max_iters = {max_iters}
optim_wrapper = dict(
    optimizer=dict(lr={lr}),{optim_extra}
)
param_scheduler = [
    dict(type='PolyLRWithWarmup', power=0.9, eta_min=0.0, warmup_iters={warmup}, warmup_ratio=1e-6,
         by_epoch=False, begin=0, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval={interval})
default_hooks = dict(checkpoint=dict(interval={interval}, max_keep_ckpts=2, save_best='mIoU'))
'''


def write_split_files(layout, out_dir):
    for split, sp in layout.splits.items():
        if sp.from_folder:
            continue
        path = osp.join(out_dir, 'splits', f'{split}.txt')
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.writelines(stem + '\n' for stem in sp.pairs)


def progress(done, total):
    """A line on stderr counting the pairs read, for data sets that take a while."""
    if total >= 500 and (done % 100 == 0 or done == total):
        print(f'\rReading pairs: {done}/{total}', end='\n' if done == total else '',
              file=sys.stderr, flush=True)


def main(argv=None):
    args = parse_args(argv)
    data_dir = osp.abspath(args.data_dir)
    name = re.sub(r'[^a-z0-9_]+', '_', (args.name or osp.basename(data_dir.rstrip(os.sep))).lower())
    name = name.strip('_') or 'data'
    out_dir = osp.abspath(args.out or osp.join(REPO, 'data', name))
    config_dir = osp.abspath(args.config_dir)
    config = osp.join(config_dir, f'{name}_{args.method}_{args.trunk}.py')
    for what, path in (('--out', out_dir), ('--config-dir', config_dir)):
        if _inside(path, data_dir):
            sys.exit(f'error: {what} {path} is inside DATA_DIR {data_dir}: this tool writes '
                     'nothing there. Choose a folder outside it.')
    if osp.exists(config) and not args.force:
        sys.exit(f'error: {config} exists (edited by hand?). Pass --force to overwrite it, or '
                 '--name to write another.')
    classes_file = args.classes
    if classes_file is None and osp.isfile(osp.join(data_dir, 'classes.txt')):
        classes_file = osp.join(data_dir, 'classes.txt')
    try:
        classes = read_classes(classes_file) if classes_file else None
        layout = find_splits(data_dir, args.train_list, args.val_list, args.val_fraction,
                             args.seed)
        scan = scan_pairs(data_dir, layout, classes, binary=args.binary, progress=progress)
    except FileNotFoundError as err:
        sys.exit(f'error: {err}')
    except DataError as err:
        count = len(err.problems)
        sys.exit(f'error: {data_dir} cannot be used as it is ({count} problem'
                 f'{"s" * (count > 1)}; nothing was written):\n\n' + '\n\n'.join(
                     f'- {p}' for p in err.problems))
    report(args, layout, scan, name)

    if scan.convert:
        n = convert_masks(data_dir, layout, scan, out_dir)
        print(f'Converted {n} masks into class-id PNGs under {out_dir} (the config reads them '
              'there; DATA_DIR is unchanged).')
    if not all(sp.from_folder for sp in layout.splits.values()):
        write_split_files(layout, out_dir)
        print(f'Split files: {osp.join(out_dir, "splits", "{train,val}.txt")}')
    command = 'python tools/new_dataset.py ' + ' '.join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    os.makedirs(config_dir, exist_ok=True)
    with open(config, 'w') as f:
        f.write(config_text(args, name, layout, scan, out_dir, config_dir, command))
    check_config(config)
    rel = osp.relpath(config) if _inside(config, os.getcwd()) else config
    work = f'work_dirs/{osp.splitext(osp.basename(config))[0]}'
    print(f'\nConfig written: {rel}\n'
          f'  train: python tools/train.py {rel}\n'
          f'  test:  python tools/test.py {rel} {work}/best_mIoU_iter_N.pth   (per-class IoU)\n'
          f'  draw:  python tools/image_demo.py {rel} {work}/best_mIoU_iter_N.pth IMAGE '
          '--out overlay.png')
    return config


def check_config(config):
    """The launchers' own data check (mmseg_custom.utils.preflight) on the written config: it
    lists the files mmseg will read and compares every pair's size."""
    from mmengine.config import Config

    from mmseg_custom.utils.preflight import check_dataset_contents, missing_data
    cfg = Config.fromfile(config)
    missing = missing_data(cfg, ('train', 'val'))
    if missing:  # a bug of this tool, not of the data
        raise RuntimeError(f'{config} names paths that do not exist: {missing}')
    check_dataset_contents(cfg, ('train', 'val'))


if __name__ == '__main__':
    main()
