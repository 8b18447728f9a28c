"""The GPU machine's Python packages, reproduced here for ``tools/gpu_check.sh --dry-run``.

The GPU machine has torch, torchvision, timm, numpy and opencv, with what they depend on, and
nothing else; the rest travels as the wheels of ``.whl/``. ``emulate`` fills a folder with links to
this interpreter's installs of exactly that base set (the dependency closure of those five
packages as installed here, read from their metadata), of mmcv (built there from its source) and,
for carried wheels that are CPython 3.12 binaries this interpreter cannot import, of the same
packages installed here. An interpreter without site-packages (a bare venv) whose path holds the
folder where the pure-Python carried wheels were installed, then this one, imports what the GPU
machine will: a module our code needs and ``.whl/`` lacks fails to import here as it would there.

    python tools/gpu_env.py emulate WHEEL_DIR OUT_DIR [--link DIST ...]
        # prints the pure wheels, one a line; --link: more distributions installed here to link
"""
import argparse
import os
import os.path as osp
import re
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

# What the GPU machine's Python has before anything is installed (see the README, "GPU check"):
# torch, torchvision, timm, numpy, opencv, and scipy (mmseg.models imports it, and imported there
# with nothing carried for it).
GPU_BASE = ['torch', 'torchvision', 'timm', 'numpy', 'opencv-python-headless', 'scipy']
# Built there from its carried source distribution.
BUILT_THERE = ['mmcv']


def dependency_closure(names):
    """Canonical names of ``names`` and everything they require, as installed here."""
    env = {'extra': ''}
    roots = {canonicalize_name(n) for n in names}
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name in roots:
                raise SystemExit(f'gpu_env: {name}, which the GPU machine has, is not installed '
                                 'here: run bash install.sh')
            continue  # an optional dependency not installed here: nothing here imports it
        seen.add(name)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(canonicalize_name(req.name))
    return seen


def top_level_entries(dist):
    """Paths (relative to site-packages) of a distribution's import names and its metadata."""
    entries = {str(dist._path.name)}  # the .dist-info folder, so importlib.metadata finds it
    for f in dist.files or []:
        parts = f.parts
        if parts[0] in ('..', '__pycache__') or parts[0].endswith('.dist-info'):
            continue
        # A lone file counts only as a module (six.py, an extension .so), not a .pth or script.
        if len(parts) > 1 or re.search(r'\.(py|so)$', parts[0]):
            entries.add(parts[0])
    return sorted(entries)


def link_distribution(name, out_dir):
    dist = metadata.distribution(name)
    site = dist.locate_file('')
    for entry in top_level_entries(dist):
        src, dst = osp.join(site, entry), osp.join(out_dir, entry)
        if osp.exists(src) and not osp.lexists(dst):
            os.symlink(src, dst)


def emulate(wheel_dir, out_dir, extra=()):
    """Link the base set, mmcv, the binary carried packages and ``extra`` distributions into
    ``out_dir``; return the pure carried wheels (paths), which the caller installs with this
    interpreter."""
    os.makedirs(out_dir, exist_ok=True)
    pure, binary = [], []
    for fname in sorted(os.listdir(wheel_dir)):
        if not fname.endswith('.whl'):
            continue
        name, version, _, tags = parse_wheel_filename(fname)
        if all(t.abi == 'none' and t.platform == 'any' for t in tags):
            pure.append(osp.join(wheel_dir, fname))
        else:
            binary.append((name, str(version)))
    names = dependency_closure(GPU_BASE) | set(BUILT_THERE) | set(extra)
    for name, version in binary:
        try:
            here = metadata.version(name)
        except metadata.PackageNotFoundError:
            sys.exit(f'gpu_env: {name} is carried as a CPython 3.12 binary wheel, which this '
                     f'interpreter cannot import, and is not installed here to stand in for it: '
                     f'pip install {name}=={version}')
        if here != version:
            print(f'gpu_env: note: {name} {version} is carried, {here} stands in for it here',
                  file=sys.stderr)
        names.add(name)
    for name in sorted(names):
        link_distribution(name, out_dir)
    return pure


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='cmd', required=True)
    emu = sub.add_parser('emulate', help='link the base set into OUT_DIR, print the pure wheels')
    emu.add_argument('wheel_dir')
    emu.add_argument('out_dir')
    emu.add_argument('--link', nargs='*', default=[], metavar='DIST')
    args = parser.parse_args()
    print('\n'.join(emulate(args.wheel_dir, args.out_dir, args.link)))


if __name__ == '__main__':
    main()
