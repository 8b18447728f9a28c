"""Kill a training job at every file operation of its checkpoint saves; check what is left.

    python kill_during_save.py CONFIG WORKSPACE OUT.json

Run by test_checkpoint_kill.py. Training runs in forked children (imports are paid once) in
WORKSPACE (which holds the config's data): 2 iterations, a checkpoint at each, validation at
each with ``save_best``, and ``max_keep_ckpts=1``, the demo's setting. A reference child records
every file operation of the checkpointing (opening a checkpoint or ``last_checkpoint`` for
writing, rename, delete). Then, for each operation k, a child is SIGKILLed just before
its k-th operation, and the folder must hold:

* the newest checkpoint completed before the kill, found by ``latest_checkpoint`` and loadable
  (any checkpoint is complete once renamed to its final name);
* a ``last_checkpoint`` that names an existing file, if it names one;
* a best checkpoint, once one was complete.

A second child then resumes (``resume='auto'``, as ``tools/train.py --resume``) and must finish
the run, from that newest checkpoint, leaving no temporary files. Problems go to OUT.json.
"""
import builtins
import glob
import json
import os
import os.path as osp
import shutil
import signal
import sys
import traceback

from mmengine.config import Config

import mmseg_custom  # noqa: F401
from mmseg_custom.engine import PortableRunner, latest_checkpoint, load_from_local
from mmseg_custom.engine.checkpoint import CHECKPOINT_NAME

# Operations that change what a killed job leaves on disk (an fsync changes nothing a later
# process sees, unless the machine itself goes down).
WATCHED = {'replace': os.replace, 'remove': os.remove, 'unlink': os.unlink}


def watched(path):
    name = osp.basename(str(path))
    return name == 'last_checkpoint' or '.pth' in name


def instrument(kill_at, trace):
    """Record each checkpoint file operation into ``trace``; SIGKILL before number ``kill_at``."""

    def point(op, path):
        trace.append((op, str(path)))
        if len(trace) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(op, func):
        def wrapped(*args, **kwargs):
            path = args[1] if op == 'replace' else args[0]
            if watched(path):
                point(op, path)
            return func(*args, **kwargs)
        return wrapped

    for op, func in WATCHED.items():
        setattr(os, op, wrap(op, func))
    builtin_open = builtins.open

    def open_(file, mode='r', *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(m in mode for m in 'wax') \
                and watched(file):
            point('open', file)
        return builtin_open(file, mode, *args, **kwargs)

    builtins.open = open_


def make_config(config, work_dir, resume):
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    cfg.train_cfg.update(max_iters=2, val_interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=1,
                                        max_keep_ckpts=1, save_best='mIoU', rule='greater')
    cfg.default_hooks.logger.interval = 100
    cfg.log_level = 'WARNING'
    cfg.resume = 'auto' if resume else False
    return cfg


def in_child(func):
    """Run ``func`` in a forked child; return its wait status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            func()
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def train(config, work_dir, kill_at=0, trace_file=None):
    trace = []
    instrument(kill_at, trace)
    PortableRunner.from_cfg(make_config(config, work_dir, resume=False)).train()
    if trace_file:
        with open(trace_file, 'w') as f:
            json.dump(trace, f)


def resume(config, work_dir, record_file):
    record = {}
    original = PortableRunner.resume

    def recording(self, filename, *args, **kwargs):
        record['from'] = filename
        return original(self, filename, *args, **kwargs)

    PortableRunner.resume = recording
    PortableRunner.from_cfg(make_config(config, work_dir, resume=True)).train()
    with open(record_file, 'w') as f:
        json.dump(record, f)


def completed(trace, prefix_len, work_dir):
    """Checkpoints renamed to their final name in the first ``prefix_len`` operations of the
    reference run, as paths in ``work_dir``."""
    return [osp.join(work_dir, osp.basename(path)) for op, path in trace[:prefix_len]
            if op == 'replace']


def check(config, root, k, trace):
    """Kill before operation ``k``; return the problems found."""
    work_dir = osp.join(root, f'kill_{k}')
    status = in_child(lambda: train(config, work_dir, kill_at=k))
    if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
        return [f'kill before operation {k} {trace[k - 1]}: child ended with status {status}']
    problems = []
    done = completed(trace, k - 1, work_dir)
    regular = [p for p in done if CHECKPOINT_NAME.match(osp.basename(p))]
    best = [p for p in done if osp.basename(p).startswith('best_')]
    latest, note = latest_checkpoint(work_dir)
    latest = latest and osp.abspath(latest)
    expected = max(regular, key=lambda p: int(CHECKPOINT_NAME.match(osp.basename(p))[1]),
                   default=None)
    where = f'kill before operation {k} {trace[k - 1]}'
    if latest != expected:
        problems.append(f'{where}: newest complete checkpoint {latest} ({note}), expected '
                        f'{expected}')
    elif latest is not None:
        try:
            load_from_local(latest)
        except Exception as err:  # noqa: BLE001 (reported, not raised)
            problems.append(f'{where}: {latest} does not load: {err}')
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and not osp.isfile(named):
            problems.append(f'{where}: last_checkpoint names the missing {named}')
    if best and not glob.glob(osp.join(work_dir, 'best_*.pth')):
        problems.append(f'{where}: no best checkpoint left (completed: {best})')

    record_file = osp.join(root, f'resume_{k}.json')
    status = in_child(lambda: resume(config, work_dir, record_file))
    if status != 0:
        problems.append(f'{where}: resuming failed (status {status})')
    else:
        with open(record_file) as f:
            resumed = json.load(f).get('from')
        resumed = resumed and osp.abspath(resumed)
        if resumed != expected:
            problems.append(f'{where}: resumed from {resumed}, expected {expected}')
        leftovers = [n for n in os.listdir(work_dir) if '.tmp.' in n]
        if leftovers:
            problems.append(f'{where}: temporary files left after resuming: {leftovers}')
        if not osp.isfile(osp.join(work_dir, 'iter_2.pth')):
            problems.append(f'{where}: the resumed run did not save iter_2.pth')
    shutil.rmtree(work_dir)
    return problems


def main():
    config, workspace, out = (osp.abspath(a) for a in sys.argv[1:4])
    os.chdir(workspace)  # the config's data root is relative
    root = osp.join(workspace, 'kill_during_save')
    os.makedirs(root, exist_ok=True)
    trace_file = osp.join(root, 'trace.json')
    status = in_child(lambda: train(config, osp.join(root, 'reference'), 0, trace_file))
    if status != 0:
        raise SystemExit(f'the reference run failed (status {status})')
    with open(trace_file) as f:
        trace = json.load(f)
    problems = []
    for k in range(1, len(trace) + 1):
        problems += check(config, root, k, trace)
    with open(out, 'w') as f:
        json.dump(dict(trace=trace, problems=problems), f, indent=1)


if __name__ == '__main__':
    main()
