"""Benchmark matrix: trunk x method x dataset, one recipe (the protocol of Kerssies et al.,
"How to Benchmark Vision Foundation Models for Semantic Segmentation?", CVPR-W 2024).

    python tools/compare.py [--datasets shapes] [--trunks dinov2_tiny] \
        [--methods linear vitsplit finetune] [--seeds 0 1 2] [--iters N] [--work-dir DIR]
    python tools/compare.py --datasets ade20k cityscapes --trunks dinov2_s --dry-run [--slurm P]
    python tools/compare.py --collect DIR        # the table of finished cells under DIR
    python tools/compare.py --methods vitsplit_eomt eomt eomt_frozen [--test-mode windows]

Each cell (dataset, trunk, method, seed) is the dataset's ViT-Split config for that trunk (the
recipe: optimizer, schedule, data, decode head) with the method's overrides from ``METHODS``, run
by mmengine's Runner in its own process; its config, logs and ``result.json`` stay in
``DIR/<dataset>/<trunk>/<method>/seed<k>/``. A rerun skips cells that have a result; a cell that
fails is a row of the table, with its error, not the end of the run; an unreadable
``result.json`` is reported and its cell run again. A cell's process dies with this one (Ctrl-C,
``kill``, even ``kill -9``), and a cell that another run is training (its ``cell.lock`` is held)
is not started a second time. The table (mIoU mean +- std over seeds, trainable parameters,
training time, peak memory, rank per dataset) is printed and written to ``DIR/results.json`` and
``DIR/results.png`` (mIoU against training time, one marker per method). Training time is the
sum of the training iterations' wall times (data loading included, validation not); peak memory
is CUDA's peak allocation, or on the CPU the process's peak RSS above what it held before
training.

Methods (``METHODS``): ``linear`` (frozen trunk, the config's decode head), ``vitsplit``,
``finetune`` (the trunk trained at 0.1x the lr), ``vitsplit_eomt`` (ViT-Split-EoMT: EoMT's queries
in the ViT-Split task head), ``eomt`` (the official EoMT: the trunk fine-tuned, at 0.1x the lr as
in ``finetune``) and ``eomt_frozen`` (queries in a trainable copy of the last blocks, no prior
head: PMT's frozen-trunk EoMT baseline); the EoMT methods put the official head and loss on the
row's classes and crop. ``--test-mode whole|slide|windows`` evaluates every cell the same way
(default: each config's own); ``windows`` is EoMT's official evaluation (short side to the crop,
evenly spaced crops along the long side).

``--dry-run`` writes every cell's config and prints its launch command (``dist_train.sh`` or,
with ``--slurm PARTITION``, ``slurm_train.sh``) instead of running it; ``--collect`` then reads
the finished work dirs (mmengine's ``vis_data/scalars.json``) into the same table.
"""
import argparse
import copy
import ctypes
import fcntl
import functools
import glob
import json
import os
import os.path as osp
import shlex
import signal
import subprocess
import sys
import threading
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _cfg(path):
    return osp.join('configs', path)


# dataset -> trunk -> the ViT-Split config that sets the recipe for every method, the overrides
# that make the trunk (on top of that config), and the GPUs of its launch command.
BENCHMARKS = {
    'shapes': {
        'dinov2_tiny': dict(config=_cfg('demo/vitsplit_tiny_shapes_pretrained.py'), gpus=1),
        'dinov2_tiny_random': dict(config=_cfg('demo/vitsplit_tiny_shapes_pretrained.py'), gpus=1,
                                   overrides={'model.backbone.trunk.pretrained': None}),
    },
    'ade20k': {
        size: dict(config=_cfg(f'ade20k/vitsplit/linear_dinov2_vitsplit_{name}_512_20k_ade20k.py'),
                   gpus=4)
        for size, name in (('dinov2_s', 'small'), ('dinov2_b', 'base'), ('dinov2_l', 'large'))
    },
    'cityscapes': {
        size: dict(config=_cfg(
            f'cityscapes/vitsplit/linear_dinov2_vitsplit_{name}_896_20k_cityscapes.py'), gpus=8)
        for size, name in (('dinov2_s', 'small'), ('dinov2_b', 'base'), ('dinov2_l', 'large'))
    },
    'pascal_context': {
        size: dict(config=_cfg(f'pascal_context/vitsplit/linear_dinov2_vitsplit_{name}_480_20k_'
                               'pascal_context_59.py'), gpus=8)
        for size, name in (('dinov2_b', 'base'), ('dinov2_l', 'large'))
    },
}


def _last_block(backbone):
    return max(backbone.select_layers)


def _plain_trunk(backbone, frozen):
    """The ViT-Split config's trunk as a plain backbone: its last task-head block's output."""
    return dict(_delete_=True, type='DINOv2Backbone', trunk=copy.deepcopy(backbone.trunk),
                out_indices=[_last_block(backbone)], frozen=frozen)


# The official EoMT head and loss (class/mask/dice 2/5/5, Hungarian matching), read from here.
EOMT_MODEL = _cfg('_base_/models/eomt_dinov2.py')
# The official mask-annealing windows (EoMT-L ADE20K: 6520 iterations each from 6520 on, of
# 40000), as fractions of a cell's schedule; cell_config scales them with --iters.
ANNEALING_WINDOW = 6520 / 40000
TRUNK_LR_MULT = {'backbone.trunk': dict(lr_mult=0.1)}  # the original recipe's fine-tuning


def crop_size(cfg):
    """The training crop of a config: its data preprocessor's size (else ``crop_size``)."""
    size = cfg.model.data_preprocessor.get('size') or cfg.get('crop_size')
    if size is None:
        raise ValueError('the config sets no model.data_preprocessor.size nor crop_size')
    return tuple(size)


def _eomt(cfg, backbone, optim=None):
    """Overrides making the cell an EoMT segmentor with ``backbone``: the official head and loss
    on the row's classes and crop, its module imported, its masks annealed."""
    from mmengine.config import Config
    num_blocks = len(cfg.model.backbone.select_layers)  # the ViT-Split task head's blocks
    num_classes = cfg.model.decode_head.num_classes
    head = Config.fromfile(osp.join(REPO, EOMT_MODEL)).model.decode_head.to_dict()
    del head['in_channels']  # the segmentor fills in the encoder's
    head.update(
        _delete_=True, num_classes=num_classes, num_blocks=num_blocks,
        # the official 100 (ADE20K, Cityscapes); the demo's 16 for a handful of classes
        num_queries=100 if num_classes > 10 else 16)
    head['loss_cls']['class_weight'] = [1.0] * num_classes + [0.1]
    # the official 12544 points per 512 px crop (and above), scaled to a smaller crop's area
    height, width = crop_size(cfg)
    head['train_cfg']['num_points'] = min(12544, round(12544 * height * width / 512**2))
    imports = list(cfg.get('custom_imports', {}).get('imports', ['mmseg_custom']))
    if 'mmseg_custom.models.eomt' not in imports:
        imports.append('mmseg_custom.models.eomt')
    # The official windows end at 5 x 16.3 % = 81.5 % of the schedule; more than 4 query blocks
    # share that span, so every block's masks are off well before the last iteration.
    fraction = min(ANNEALING_WINDOW, 5 * ANNEALING_WINDOW / (num_blocks + 1))
    window = fraction * cfg.train_cfg.max_iters
    hooks = [h.to_dict() if hasattr(h, 'to_dict') else dict(h)
             for h in cfg.get('custom_hooks') or [] if h.get('type') != 'EoMTMaskAnnealingHook']
    hooks.append(dict(type='EoMTMaskAnnealingHook',
                      start_iters=[round(window * (k + 1)) for k in range(num_blocks)],
                      end_iters=[round(window * (k + 2)) for k in range(num_blocks)]))
    overrides = {
        'model.type': 'EoMT',
        'model.backbone': dict(backbone, _delete_=True),
        'model.decode_head': head,
        'custom_imports': dict(imports=imports, allow_failed_imports=False),
        'custom_hooks': hooks,
    }
    if cfg.model.get('auxiliary_head'):
        overrides['model.auxiliary_head'] = None
    if optim is not None:
        overrides['optim_wrapper.paramwise_cfg'] = optim
    return overrides


def _vitsplit_eomt(cfg, out_indices=None):
    backbone = cfg.model.backbone
    return dict(type='ViTSplitEoMTEncoder', trunk=copy.deepcopy(backbone.trunk),
                select_layers=list(backbone.select_layers),
                out_indices=list(backbone.out_indices if out_indices is None else out_indices))


# method -> function of the cell's config (the row's ViT-Split config, the row's overrides merged)
# giving the config overrides of the method. A method added here (e.g. a PEFT adapter) is one
# more entry; its overrides may replace model.backbone (keep backbone.trunk) and set the
# optimizer's paramwise_cfg.
METHODS = {
    'linear': lambda cfg: {'model.backbone': _plain_trunk(cfg.model.backbone, frozen=True)},
    'finetune': lambda cfg: {
        'model.backbone': _plain_trunk(cfg.model.backbone, frozen=False),
        # the original recipe's fine-tuning: the pretrained trunk at 0.1x the lr
        'optim_wrapper.paramwise_cfg': dict(_delete_=True, custom_keys=TRUNK_LR_MULT),
    },
    'vitsplit': lambda cfg: {},
    # ViT-Split-EoMT: frozen trunk, the queries in the task head (its select_layers, at the row's
    # task-head lr), the prior head on its out_indices added to the mask features.
    'vitsplit_eomt': lambda cfg: _eomt(cfg, _vitsplit_eomt(cfg)),
    # The official EoMT: the trunk fine-tuned, its last len(select_layers) blocks carrying the
    # queries. The trunk at 0.1x the lr, as 'finetune': the cell keeps the row's recipe
    # (optimizer, lr, poly schedule), so EoMT differs from the others in the model only. The
    # official layer decay (EoMTOptimWrapperConstructor) belongs with its own recipe (AdamW 1e-4,
    # TwoStageWarmupPolyLR): two changes at once, not the one recipe of this benchmark.
    'eomt': lambda cfg: _eomt(
        cfg, dict(type='EoMTEncoder', trunk=copy.deepcopy(cfg.model.backbone.trunk)),
        optim=dict(_delete_=True, custom_keys=TRUNK_LR_MULT)),
    # PMT's frozen-trunk EoMT baseline: ViT-Split-EoMT without the prior head.
    'eomt_frozen': lambda cfg: _eomt(cfg, _vitsplit_eomt(cfg, out_indices=[])),
}
TEST_MODES = ('whole', 'slide', 'windows')
# Segmentors that run test_cfg.mode='windows' (BatchedSlideEncoderDecoder.inference).
WINDOWS_SEGMENTORS = ('BatchedSlideEncoderDecoder', 'EoMT')


def set_test_mode(cfg, mode):
    """Evaluate the cell by ``mode``: ``whole``; ``slide`` (the config's crops and stride where it
    slides already, else its training crop at a stride of 2/3 of it); ``windows`` (the official
    EoMT windows of the training crop). mmseg's plain ``EncoderDecoder`` becomes a
    ``BatchedSlideEncoderDecoder`` for ``windows`` (the same model, training and checkpoints);
    another segmentor without that mode is refused."""
    old = dict(cfg.model.get('test_cfg') or {})
    crop = crop_size(cfg)
    new = {k: old[k] for k in ('crop_batch', 'amp', 'compile') if k in old}
    if mode == 'slide':
        if old.get('mode') == 'slide':
            new.update(crop_size=tuple(old['crop_size']), stride=tuple(old['stride']))
        else:
            new.update(crop_size=crop, stride=tuple(c * 2 // 3 for c in crop))
    elif mode == 'windows':
        new.update(crop_size=crop)
        kind = cfg.model.type.split('.')[-1]
        if kind == 'EncoderDecoder':
            cfg.model.type = 'BatchedSlideEncoderDecoder'
        elif kind not in WINDOWS_SEGMENTORS:
            raise ValueError(f"--test-mode windows: the segmentor {cfg.model.type} has no windows "
                             f"mode; it runs on {', '.join(WINDOWS_SEGMENTORS)} (and mmseg's "
                             'EncoderDecoder, which compare.py switches to the first)')
    cfg.model.test_cfg = dict(mode=mode, **new)


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value} is not a positive number')
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train and compare segmentation methods over trunks and datasets.')
    parser.add_argument('--datasets', nargs='+', default=['shapes'], choices=sorted(BENCHMARKS))
    parser.add_argument('--trunks', nargs='+', default=None,
                        help='trunk names of the datasets\' rows in BENCHMARKS (default: the '
                        'first trunk of each dataset)')
    parser.add_argument('--methods', nargs='+', default=['linear', 'vitsplit', 'finetune'])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--iters', type=positive_int, default=None,
                        help='training iterations of every cell (schedule scaled to fit); '
                        'default: each config\'s own')
    parser.add_argument('--work-dir', default='work_dirs/compare')
    parser.add_argument('--test-mode', choices=TEST_MODES, default=None,
                        help="evaluate every cell by whole-image inference, mmseg's slide or "
                        "EoMT's windows (crop: the config's training crop); default: each "
                        "config's own")
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='overrides applied to every cell (mmengine --cfg-options syntax)')
    parser.add_argument('--dry-run', action='store_true',
                        help='write the cell configs and print their launch commands only')
    parser.add_argument('--slurm', metavar='PARTITION',
                        help='with --dry-run: slurm_train.sh commands for this partition')
    parser.add_argument('--collect', nargs='+', metavar='DIR',
                        help='print the table of the finished cells under these dirs, run nothing')
    parser.add_argument('--verbose', action='store_true', help='show the cells\' training logs')
    parser.add_argument('--run-cell', metavar='CELL_DIR', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f'unknown method(s) {unknown}; known: {sorted(METHODS)} (add one to METHODS)')
    if args.slurm and not args.dry_run:
        parser.error('--slurm only shapes the commands of --dry-run')
    repeated = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
    if repeated:
        parser.error(f'--seeds {" ".join(map(str, args.seeds))}: seed(s) {repeated} given more '
                     'than once; each seed is one more run of every cell, give each once')
    known = {t for dataset in args.datasets for t in BENCHMARKS[dataset]}
    unknown = [t for t in args.trunks or [] if t not in known]
    if unknown and not args.collect:
        trunks = '; '.join(f'{d}: {" ".join(BENCHMARKS[d])}' for d in args.datasets)
        parser.error(f'unknown trunk(s) {unknown}: no dataset of --datasets has them. Trunks: '
                     f'{trunks} (add rows to BENCHMARKS)')
    missing = [d for d in args.collect or [] if not osp.isdir(d)]
    if missing:
        parser.error(f'--collect {missing[0]}: no such folder; give the --work-dir of a run '
                     '(default work_dirs/compare)')
    return args


def cell_dir(work_dir, dataset, trunk, method, seed):
    return osp.join(work_dir, dataset, trunk, method, f'seed{seed}')


def plan(args):
    """The cells of the matrix: (dataset, trunk, method, seed, benchmark row)."""
    cells = []
    for dataset in args.datasets:
        rows = BENCHMARKS[dataset]
        trunks = args.trunks or [next(iter(rows))]
        missing = [t for t in trunks if t not in rows]
        if missing:  # another dataset has them (parse_args refuses unknown trunks)
            warn(f'dataset {dataset} has no trunk(s) {missing}: no cells for them there')
        for trunk in (t for t in trunks if t in rows):
            for method in args.methods:
                cells += [(dataset, trunk, method, seed, rows[trunk]) for seed in args.seeds]
    # seed by seed: a run stopped early has every method's first seeds
    cells.sort(key=lambda c: args.seeds.index(c[3]))
    return cells


def cell_config(row, method, seed, iters, cfg_options, test_mode=None):
    """The merged config of one cell."""
    from mmengine.config import Config, DictAction

    from mmseg_custom.utils.schedule import scale_schedule
    cfg = Config.fromfile(osp.join(REPO, row['config']))
    cfg.merge_from_dict(row.get('overrides', {}))
    cfg.merge_from_dict(METHODS[method](cfg))
    if test_mode is not None:
        set_test_mode(cfg, test_mode)
    if cfg_options:
        parsed = argparse.Namespace()
        DictAction(option_strings=[], dest='o')(None, parsed, cfg_options)
        cfg.merge_from_dict(parsed.o)
    cfg.randomness = dict(cfg.get('randomness', {}), seed=seed)
    if iters is not None:
        scale_schedule(cfg, iters)
    # one validation, at the end: the table's mIoU; one checkpoint there too
    cfg.train_cfg.val_interval = cfg.train_cfg.max_iters
    cfg.default_hooks.checkpoint.interval = cfg.train_cfg.max_iters
    cfg.default_hooks.checkpoint.save_best = None
    return cfg


def launch_command(config, work_dir, gpus, seed, slurm, job):
    if slurm:
        cmd = ['bash', 'slurm_train.sh', slurm, job, config, str(gpus)]
    else:
        cmd = ['bash', 'dist_train.sh', config, str(gpus)]
    return ' '.join(shlex.quote(c) for c in cmd + ['--work-dir', work_dir, '--seed', str(seed)])


def prepare_shapes_data(cfg):
    """The embedded data set is written on first use, like the demo does."""
    from mmseg_custom.datasets import generate_dataset
    from mmseg_custom.datasets.synthetic_shapes import MARKER
    root = cfg.train_dataloader.dataset.data_root
    if not osp.isfile(osp.join(root, MARKER)):
        generate_dataset(root)


# ---------------------------------------------------------------- one cell, in its own process

def run_cell(directory):
    """Train the cell in ``directory`` (its config.py) and write ``result.json``."""
    import torch
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmseg.registry import RUNNERS

    import mmseg_custom  # noqa: F401
    from mmseg_custom.engine import PortableRunner
    from mmseg_custom.utils.malloc import keep_freed_memory

    keep_freed_memory()
    cfg = Config.fromfile(osp.join(directory, 'config.py'))
    cfg.work_dir = directory

    class Recorder(Hook):
        """Trainable parameters, summed training-iteration time, peak memory, final metrics."""
        priority = 'VERY_LOW'

        def __init__(self):
            self.train_seconds, self.metrics, self.idle = 0.0, None, 0

        def before_train(self, runner):
            model = runner.model
            self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            self.cuda = torch.cuda.is_available() and next(model.parameters()).is_cuda
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
                self.idle = torch.cuda.memory_allocated()
            else:
                self.idle = _rss('VmRSS')
                with open('/proc/self/clear_refs', 'w') as f:
                    f.write('5')  # peak RSS := current RSS

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self._start = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if self.cuda:
                torch.cuda.synchronize()
            self.train_seconds += time.perf_counter() - self._start

        def after_val_epoch(self, runner, metrics=None):
            self.metrics = dict(metrics or {})
            self.peak = ((torch.cuda.max_memory_allocated() if self.cuda else _rss('VmHWM'))
                         - self.idle)

    recorder = Recorder()
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else PortableRunner.from_cfg(cfg)
    runner.register_hook(recorder)
    runner.train()
    with open(osp.join(directory, 'cell.json')) as f:
        result = json.load(f)
    result.update(status='ok', mIoU=recorder.metrics.get('mIoU'),
                  trainable=recorder.trainable, train_seconds=round(recorder.train_seconds, 2),
                  peak_mib=round(recorder.peak / 2**20, 1), **protocol(cfg),
                  device='cuda' if recorder.cuda else 'cpu', threads=torch.get_num_threads())
    _write_json(osp.join(directory, 'result.json'), result)


def _rss(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    return 0


def _write_json(path, obj):
    from mmseg_custom.utils.atomic import atomic_write  # not at the top: it imports the package
    with atomic_write(path, 'w') as f:
        json.dump(obj, f, indent=1)


def protocol(cfg):
    """What a cell's result depends on beyond its key: iterations and the test mode."""
    return dict(iters=cfg.train_cfg.max_iters,
                test_mode=(cfg.model.get('test_cfg') or {}).get('mode', 'whole'))


def warn(message):
    print(f'compare.py: {message}', file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the matrix

def run_matrix(args):
    from mmengine.utils import ProgressBar

    cells = plan(args)
    results, commands = [], []
    todo = []
    for dataset, trunk, method, seed, row in cells:
        directory = cell_dir(args.work_dir, dataset, trunk, method, seed)
        key = dict(dataset=dataset, trunk=trunk, method=method, seed=seed)
        try:
            cfg = cell_config(row, method, seed, args.iters, args.cfg_options, args.test_mode)
        except Exception as e:  # a method that does not fit this trunk's config: a failed cell
            results.append(dict(key, status='failed', error=f'config: {type(e).__name__}: {e}'))
            continue
        if not args.dry_run:
            path = osp.join(directory, 'result.json')
            done, problem = load_result(path, key)
            if problem:
                warn(f'ignoring {path}: it {problem}; the cell runs again')
            if done and done['status'] == 'ok':
                # a finished cell of another protocol (iterations, test mode) is not this run's
                other = {k: (done[k], v) for k, v in protocol(cfg).items()
                         if done.get(k) is not None and done[k] != v}
                if not other:
                    results.append(done)  # finished by an earlier run: kept as it is
                    continue
                warn(f'{path} was run with ' + ', '.join(
                    f'{k}={was!r} (now {now!r})' for k, (was, now) in other.items())
                    + '; the cell runs again')
        if args.dry_run:
            write_cell(directory, key, cfg)
            job = f'{dataset}-{trunk}-{method}-s{seed}'
            commands.append(launch_command(osp.join(directory, 'config.py'), directory,
                                           row['gpus'], seed, args.slurm, job))
            continue
        # written once the cell's lock is held: a run training it keeps its config
        todo.append((key, directory, functools.partial(write_cell, directory, key, cfg,
                                                       dataset == 'shapes')))
    if args.dry_run:
        print('\n'.join(commands))
        print(f'# {len(commands)} cells; after they finish: python tools/compare.py '
              f'--collect {args.work_dir}')
        return results
    skipped = len(results)
    if skipped:
        print(f'{skipped} cell(s) already done in {args.work_dir}: kept')
    bar = ProgressBar(len(todo)) if todo else None
    for key, directory, prepare in todo:
        results.append(run_one(key, directory, args.verbose, prepare))
        bar.update()
    if todo:
        print()
    report(results, args.work_dir)
    return results


def write_cell(directory, key, cfg, shapes=False):
    """The files a cell's process reads: its config, its key, the embedded data if it uses it."""
    os.makedirs(directory, exist_ok=True)
    cfg.dump(osp.join(directory, 'config.py'))
    _write_json(osp.join(directory, 'cell.json'), key)
    if shapes:
        prepare_shapes_data(cfg)


def cell_command(directory):
    """The command line of the process that trains the cell in ``directory``."""
    return [sys.executable, osp.abspath(__file__), '--run-cell', directory]


def run_one(key, directory, verbose, prepare=None):
    """Run one cell in a fresh process; a failure becomes a failed row with its error.

    A cell another process is training (its lock is held) is not started again: a pending row.
    ``prepare()`` (writing the cell's files) runs once the lock is held.
    """
    path = osp.join(directory, 'result.json')
    lock, holder = lock_cell(directory)
    if lock is None:
        warn(f'{directory} is being trained by process {holder} (its cell.lock): not started '
             'again here')
        return dict(key, status='pending', error=f'running in process {holder}')
    with lock:
        done, _ = load_result(path, key)
        if done and done['status'] == 'ok':  # finished by a concurrent run meanwhile
            return done
        if osp.exists(path):
            os.remove(path)  # an earlier failure's: the row must be this run's
        if prepare is not None:
            prepare()
        log = osp.join(directory, 'run.log')
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (REPO, os.environ.get('PYTHONPATH')) if p))
        with open(log, 'w') as f:
            returncode = run_child(cell_command(directory), env, None if verbose else f, lock)
        result, problem = load_result(path, key)
        if returncode == 0 and result:
            return result
        tail = problem and f'its result.json {problem}'
        if not tail and osp.isfile(log):
            with open(log, errors='replace') as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            tail = lines[-1] if lines else ''
        failed = dict(key, status='failed', error=f'exit {returncode}: {tail}'[:300], log=log)
        _write_json(path, failed)
        return failed


def lock_cell(directory):
    """Take the lock of the cell in ``directory``: ``cell.lock``, an flock, holding the PID.

    The kernel releases an flock when its holder dies, so the lock of a killed run is free: its
    file, with a dead PID, is taken over. Returns (the open lock file, None), or (None, the PID
    written in it) when a live process holds it.
    """
    os.makedirs(directory, exist_ok=True)
    f = open(osp.join(directory, 'cell.lock'), 'a+')
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or '?'
        f.close()
        return None, holder
    f.seek(0)
    f.truncate()
    f.write(f'{os.getpid()}\n')
    f.flush()
    return f, None


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def run_child(cmd, env, stdout, lock):
    """Run ``cmd`` to its end and return its exit status; it dies with this process.

    The child runs in its own process group, stopped as a whole (data-loader workers included)
    when this process is interrupted (Ctrl-C) or terminated (SIGTERM, SIGHUP); on Linux the
    kernel kills it when this process dies in any other way (SIGKILL). It inherits ``lock``: the
    cell stays locked while it lives.
    """
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith('linux') else None

    def in_child():
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    def terminate(signum, frame):
        raise SystemExit(128 + signum)  # unwinds to the clean-up below

    handled = (signal.SIGTERM, signal.SIGHUP)
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, terminate) for s in handled} if in_main else {}
    try:
        proc = subprocess.Popen(cmd, cwd=os.getcwd(), env=env, stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=subprocess.STDOUT, preexec_fn=in_child,
                                pass_fds=(lock.fileno(), ))
        try:
            return proc.wait()
        except BaseException:
            stop_group(proc)
            raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def stop_group(proc, grace=10):
    """Terminate the process group of ``proc`` (SIGTERM, then SIGKILL after ``grace`` s)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(grace if sig == signal.SIGTERM else None)
            break
        except subprocess.TimeoutExpired:
            continue


# What the table reads from a result.json; anything else there is kept but not checked.
KEY_FIELDS = {'dataset': str, 'trunk': str, 'method': str, 'seed': int}
STATUSES = ('ok', 'failed', 'pending')
NUMBER_FIELDS = ('mIoU', 'trainable', 'train_seconds', 'peak_mib', 'iters')


def _load_json(path):
    """(content, None); (None, None) when there is no file; (None, why) when it cannot be read."""
    if not osp.isfile(path):
        return None, None
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f), None
    except (OSError, ValueError) as err:  # ValueError: not UTF-8, not JSON
        return None, f'is not readable JSON ({type(err).__name__}: {err})'


def _key_problem(obj):
    if not isinstance(obj, dict):
        return f'holds a JSON {type(obj).__name__}, not an object'
    for field, kind in KEY_FIELDS.items():
        value = obj.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f'has no valid {field!r} ({value!r})'
    return None


def load_key(path):
    """A cell's key (dataset, trunk, method, seed) from its cell.json: (key, None) or
    (None, why it is unusable)."""
    obj, problem = _load_json(path)
    if obj is None:
        return None, problem or 'does not exist'
    problem = _key_problem(obj)
    return (None, problem) if problem else ({k: obj[k] for k in KEY_FIELDS}, None)


def _result_problem(result, key):
    problem = _key_problem(result)
    if problem:
        return problem
    if result.get('status') not in STATUSES:
        return f'has status {result.get("status")!r}, not one of {list(STATUSES)}'
    for field in NUMBER_FIELDS:
        value = result.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f'has a {field!r} that is not a number ({value!r})'
    if not isinstance(result.get('error'), (str, type(None))):
        return f'has an error that is not text ({result["error"]!r})'
    if key is not None and any(result[k] != v for k, v in key.items()):
        return f'is the result of another cell ({ {k: result[k] for k in key} })'
    return None


def load_result(path, key=None):
    """A cell's result.json: (result, None); (None, None) without one; (None, why) when it is
    unusable: not JSON, not an object, missing or mistyped fields, another cell's (``key``)."""
    result, problem = _load_json(path)
    if result is not None:
        problem = _result_problem(result, key)
    return (None, problem) if problem else (result, None)


# ---------------------------------------------------------------- reading finished work dirs

def collect(dirs):
    """Results of every cell under ``dirs``: its result.json, else its mmengine logs."""
    results = []
    for root in dirs:
        if not osp.isdir(root):
            raise SystemExit(f'compare.py --collect: no folder {root}; give the --work-dir of a '
                             'run')
        for key_file in sorted(glob.glob(osp.join(root, '**', 'cell.json'), recursive=True)):
            directory = osp.dirname(key_file)
            key, problem = load_key(key_file)
            if problem:
                warn(f'skipping the cell in {directory}: its {key_file} {problem}')
                continue
            path = osp.join(directory, 'result.json')
            result, problem = load_result(path, key)
            if problem:
                warn(f'ignoring {path}: it {problem}; reading the cell\'s logs instead')
            results.append(result or read_work_dir(directory, key))
    return results


def read_work_dir(directory, key):
    """A cell launched by dist_train.sh/slurm_train.sh: mIoU, time and memory from its logs."""
    runs = sorted(glob.glob(osp.join(directory, '*', 'vis_data', 'scalars.json')))
    if not runs:
        return dict(key, status='pending', error='no training log yet')
    records = []
    with open(runs[-1], errors='replace') as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:  # e.g. the last line of a job still writing it
                continue
            if isinstance(record, dict):
                records.append(record)
    mious = [r['mIoU'] for r in records if 'mIoU' in r]
    times = [(r['step'], r['time']) for r in records if 'time' in r and 'loss' in r]
    memory = [r['memory'] for r in records if 'memory' in r]
    result = dict(key, status='ok' if mious else 'pending', mIoU=mious[-1] if mious else None,
                  iters=times[-1][0] if times else None,
                  # logged times are window means per log interval: their mean x iterations
                  train_seconds=(round(sum(t for _, t in times) / len(times) * times[-1][0], 1)
                                 if times else None),
                  peak_mib=max(memory) if memory else None)
    try:
        from mmengine.config import Config

        from mmseg_custom.utils.params import build_on_meta
        model = build_on_meta(Config.fromfile(osp.join(directory, 'config.py')))
        result['trainable'] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    except Exception as e:  # the table still shows the rest
        result['trainable'] = None
        result['error'] = f'trainable parameters: {type(e).__name__}: {e}'[:200]
    return result


# ---------------------------------------------------------------- the table and the plot

def summarize(results):
    """Rows per (dataset, trunk, method): mean/std over seeds, rank within the dataset."""
    import numpy as np
    groups = {}
    for r in results:
        groups.setdefault((r['dataset'], r['trunk'], r['method']), []).append(r)
    rows = []
    for (dataset, trunk, method), runs in groups.items():
        # cells still running or queued count only where nothing else is known
        runs = [r for r in runs if r.get('status') != 'pending'] or runs
        ok = [r for r in runs if r.get('status') == 'ok' and r.get('mIoU') is not None]
        row = dict(dataset=dataset, trunk=trunk, method=method, seeds=len(ok), runs=len(runs))
        for field in ('mIoU', 'train_seconds', 'peak_mib'):
            values = [r[field] for r in ok if r.get(field) is not None]
            row[field] = float(np.mean(values)) if values else None
            row[field + '_std'] = float(np.std(values, ddof=1)) if len(values) > 1 else None
            row[field + '_min'] = float(min(values)) if values else None
            row[field + '_max'] = float(max(values)) if values else None
        row['trainable'] = next((r['trainable'] for r in ok if r.get('trainable') is not None),
                                None)
        errors = [r.get('error') for r in runs if r.get('status') != 'ok']
        row['error'] = errors[0] if errors else None
        rows.append(row)
    for dataset in {r['dataset'] for r in rows}:
        ranked = sorted((r for r in rows if r['dataset'] == dataset and r['mIoU'] is not None),
                        key=lambda r: -r['mIoU'])
        for i, r in enumerate(ranked):
            r['rank'] = i + 1
    rows.sort(key=lambda r: (r['dataset'], r.get('rank') or 1e9, r['trunk'], r['method']))
    return rows


def format_table(rows):
    def pm(mean, std, fmt):
        if mean is None:
            return '-'
        return fmt.format(mean) + (f' ± {fmt.format(std)}' if std is not None else '')

    header = ['dataset', 'trunk', 'method', 'mIoU (%)', 'seeds', 'trainable', 'train time (s)',
              'peak mem (MiB)', 'rank']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * 3 + '---:|' * 6]
    for r in rows:
        trainable = f'{r["trainable"] / 1e6:.2f}M' if r['trainable'] is not None else '-'
        cells = [r['dataset'], r['trunk'], r['method'], pm(r['mIoU'], r['mIoU_std'], '{:.1f}'),
                 f'{r["seeds"]}/{r["runs"]}', trainable,
                 pm(r['train_seconds'], r['train_seconds_std'], '{:.0f}'),
                 pm(r['peak_mib'], None, '{:.0f}'), str(r.get('rank', '-'))]
        if r['error'] and r['seeds'] < r['runs']:
            cells[3] = f'FAILED ({r["error"][:60]})' if r['seeds'] == 0 else cells[3] + ' (!)'
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


MARKERS = {'linear': 'o', 'vitsplit': '*', 'finetune': 's', 'vitsplit_eomt': 'P', 'eomt': 'D',
           'eomt_frozen': 'X'}


def placed(row):
    """Whether the plot (mIoU against training time) can show ``row``."""
    return row['mIoU'] is not None and row['train_seconds'] is not None


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    datasets = sorted({r['dataset'] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    trunks = sorted({r['trunk'] for r in rows})
    colours = {t: f'C{i}' for i, t in enumerate(trunks)}
    extra = iter('^vDPXph<>')
    for ax, dataset in zip(axes[0], datasets):
        for r in (r for r in rows if r['dataset'] == dataset and placed(r)):
            marker = MARKERS.get(r['method']) or MARKERS.setdefault(r['method'], next(extra))
            ax.errorbar(r['train_seconds'], r['mIoU'], yerr=r['mIoU_std'] or 0,
                        xerr=r['train_seconds_std'] or 0, marker=marker, markersize=10,
                        color=colours[r['trunk']], capsize=3, linestyle='none',
                        label=f'{r["method"]} ({r["trunk"]})')
        ax.set(title=dataset, xlabel='training time (s)', ylabel='mIoU (%)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    from mmseg_custom.utils.atomic import atomic_write
    with atomic_write(path) as f:
        fig.savefig(f, format='png', dpi=100)
    plt.close(fig)


def report(results, out_dir):
    rows = summarize(results)
    print(format_table(rows))
    os.makedirs(out_dir, exist_ok=True)
    table, figure = osp.join(out_dir, 'results.json'), osp.join(out_dir, 'results.png')
    _write_json(table, dict(rows=rows, cells=results))
    if any(placed(r) for r in rows):
        plot(rows, figure)
        print(f'table: {table}, plot: {figure}')
    else:
        print(f'table: {table}; no plot (no row has both an mIoU and a training time)')
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.run_cell:
        return run_cell(args.run_cell)
    if args.collect:
        return report(collect(args.collect), args.work_dir if args.work_dir != 'work_dirs/compare'
                      else args.collect[0])
    return run_matrix(args)


if __name__ == '__main__':
    main()
