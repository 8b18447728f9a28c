"""A procedural segmentation data set: shapes and textures on noisy backgrounds.

Each image holds one to three objects of five classes told apart by their outline (circle, triangle,
square) or their texture (stripes, checker), each wholly inside the image and barely covered by the
others, so that its outline shows; every object gets random colours and the background is
a random colour gradient with low-frequency blotches and pixel noise, so colour alone never gives
the class. It is made for the embedded demo (``tools/demo.py``): a data set a tiny model learns in
minutes on a CPU, written once in mmseg's folder layout::

    data_root/img_dir/{train,val}/00000.png   RGB images
    data_root/ann_dir/{train,val}/00000.png   class index per pixel (0 = background)
    data_root/.complete                       written last; holds the generation parameters
    data_root/.writing                        present while the files are being written

A copy without the hidden files is recognised by its content (every image and label there, and
the last of each split as the generator draws it), so it is reused, never regenerated over.

Generation is deterministic: image ``i`` of a split depends only on ``(seed, split, i, size)``.
Command line: ``python -m mmseg_custom.datasets data/demo_shapes``.
"""
import argparse
import json
import multiprocessing
import os
import os.path as osp
import shutil

import numpy as np
from PIL import Image

from ..utils.atomic import atomic_write

CLASSES = ('background', 'circle', 'triangle', 'square', 'stripes', 'checker')
PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
           [145, 30, 180]]

MARKER = '.complete'
PENDING = '.writing'  # written first, removed last: its presence means an interrupted run
SPLITS = ('train', 'val')
# Object scale (radius of the equal-area circle) as a fraction of the image side.
RADIUS_RANGE = (0.2, 0.3)
# Stripe/checker period in pixels (a 14 px ViT patch holds one to two periods).
TEXTURE_PERIOD = (8.0, 14.0)
# Per-image Gaussian pixel noise, standard deviation range (0-255 scale).
NOISE_STD = (2.0, 8.0)
# Bump when the drawing code changes, so data written by an older version is regenerated.
GENERATOR_VERSION = 2


def _background(rng, size):
    """Random two-colour linear gradient with low-frequency blotches (pixel noise comes last)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) * np.sqrt(2) + 0.5
    c0, c1 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    img = c0 + t[..., None] * (c1 - c0)
    # Low-frequency blotches: a coarse random grid upsampled bilinearly.
    grid = rng.normal(0, 25, size=(5, 5, 3)).astype(np.float32)
    blotch = np.asarray(
        [np.asarray(Image.fromarray(grid[..., k]).resize((size, size), Image.BILINEAR))
         for k in range(3)]).transpose(1, 2, 0)
    return img + blotch


def _contrasting_colour(rng, ref, min_dist=90.0):
    """A random RGB colour at least ``min_dist`` away from ``ref`` (best of a few tries)."""
    best, best_d = None, -1.0
    for _ in range(20):
        c = rng.uniform(0, 255, size=3).astype(np.float32)
        d = float(np.linalg.norm(c - ref))
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _shape_mask(cls, rng, size, cy, cx, r):
    """Boolean mask of one object of class ``cls`` centred at (cy, cx) with scale ``r`` (pixels)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    theta = rng.uniform(0, 2 * np.pi)
    cos, sin = np.cos(theta), np.sin(theta)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # object frame
    name = CLASSES[cls]
    if name == 'circle':
        return dx**2 + dy**2 <= r**2
    if name == 'square':
        half = r * 0.886  # same area as the circle of radius r
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if name == 'triangle':
        # Equilateral, circumradius R with area equal to the circle's: 1.299 R^2 = pi r^2.
        big_r = r * 1.555
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = theta + k * 2 * np.pi / 3
            # Half-plane bounded by the edge whose outward normal points at angle a.
            inside &= (np.cos(a) * dx + np.sin(a) * dy) <= big_r / 2
        return inside
    # Textured classes: an ellipse of the circle's area, the class is in the fill pattern.
    ratio = rng.uniform(0.7, 1.0)
    a, b = r / np.sqrt(ratio), r * np.sqrt(ratio)
    return (u / a)**2 + (v / b)**2 <= 1.0


def _fill(cls, rng, size, ref):
    """Per-pixel RGB fill of class ``cls`` for the whole canvas (masked by the caller)."""
    name = CLASSES[cls]
    col = _contrasting_colour(rng, ref)
    if name not in ('stripes', 'checker'):
        return np.broadcast_to(col, (size, size, 3))
    col2 = _contrasting_colour(rng, col)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(*TEXTURE_PERIOD)
    u = np.cos(theta) * xx + np.sin(theta) * yy
    if name == 'stripes':
        on = np.floor(u / (period / 2)) % 2 == 0
    else:
        v = -np.sin(theta) * xx + np.cos(theta) * yy
        on = (np.floor(u / (period / 2)) + np.floor(v / (period / 2))) % 2 == 0
    return np.where(on[..., None], col, col2)


# Every class has the area of a circle of radius r. An object must lie (almost) wholly inside the
# image, since a shape cut by the border loses the outline that names its class, and may be covered
# by earlier objects only slightly.
MIN_INSIDE = 0.97
MAX_OVERLAP = 0.02


def generate_sample(rng, size=112, max_objects=3):
    """Draw one image and its label map.

    Args:
        rng (np.random.Generator): source of randomness.
        size (int): image height and width. Default: 112.
        max_objects (int): at most this many objects (at least 2 are tried). Default: 3.

    Returns:
        tuple[np.ndarray, np.ndarray]: RGB image (size, size, 3) uint8 and label map (size, size)
        uint8 with values in ``range(len(CLASSES))``.
    """
    img = _background(rng, size)
    label = np.zeros((size, size), np.uint8)
    n = int(rng.integers(2, max_objects + 1))
    for _ in range(n):
        cls = int(rng.integers(1, len(CLASSES)))
        # Rejection sampling: keep objects apart so each one shows its whole outline.
        for _attempt in range(40):
            r = rng.uniform(*RADIUS_RANGE) * size
            # Centres nearer the border than 0.8 r always lose more than 3% of the area.
            cy, cx = rng.uniform(0.8 * r, size - 0.8 * r, size=2)
            mask = _shape_mask(cls, rng, size, cy, cx, r)
            area = mask.sum()
            if (area >= MIN_INSIDE * np.pi * r * r
                    and (label[mask] > 0).sum() <= MAX_OVERLAP * area):
                break
        else:
            continue
        ref = img[mask].mean(axis=0)
        img = np.where(mask[..., None], _fill(cls, rng, size, ref), img)
        label[mask] = cls
    img = img + rng.normal(0, rng.uniform(*NOISE_STD), size=img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8), label


def _sample_rng(seed, split, index):
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _atomic_save(array, path):
    # Not fsynced one by one (~8 ms each, thousands of files): generate_dataset syncs them all
    # at once before the marker that says the data set is complete.
    with atomic_write(path, sync=False) as f:
        Image.fromarray(array).save(f, format='PNG')


def dataset_is_complete(data_root, **params):
    """True when ``data_root`` holds a finished data set made with exactly these parameters:
    its marker says so, or, without markers (a copy that left the hidden files behind), its
    content does (see :func:`content_matches`)."""
    marker = osp.join(data_root, MARKER)
    if not osp.isfile(marker):
        return not osp.exists(osp.join(data_root, PENDING)) and content_matches(data_root,
                                                                                **params)
    with open(marker) as f:
        try:
            return json.load(f) == _marker_content(**params)
        except json.JSONDecodeError:
            return False


def _names(folder):
    return sorted(os.listdir(folder)) if osp.isdir(folder) else []


def split_problem(img_dir, ann_dir):
    """Why the images and labels of one split are not a complete set, or None if they are.

    Complete: ``00000.png`` .. ``N-1``, N >= 1, each with its label, and nothing else (no
    temporary file of an interrupted write)."""
    images, labels = _names(img_dir), _names(ann_dir)
    if not images:
        return f'no images in {img_dir}'
    if images != labels:
        unpaired = sorted(set(images) ^ set(labels))
        return (f'{len(unpaired)} files of {img_dir} and {ann_dir} have no counterpart '
                f'(e.g. {unpaired[0]})')
    expected = [f'{i:05d}.png' for i in range(len(images))]
    if images != expected:
        odd = sorted(set(images) - set(expected))[0]
        return f'{img_dir} holds {odd}, not numbered 00000.png .. {expected[-1]} in order'
    return None


def content_matches(data_root, num_train, num_val, size, seed):
    """Whether ``data_root``'s files are the data set of these parameters, by content: each
    split has exactly its images and labels, and the last of each is the one the generator
    draws (generation is deterministic, so this checks size, seed and drawing code too)."""
    for split, count in (('train', num_train), ('val', num_val)):
        img_dir, ann_dir = (osp.join(data_root, kind, split) for kind in ('img_dir', 'ann_dir'))
        if split_problem(img_dir, ann_dir) is not None or len(_names(img_dir)) != count:
            return False
        img, label = generate_sample(_sample_rng(seed, split, count - 1), size=size)
        name = f'{count - 1:05d}.png'
        try:
            ok = (np.array_equal(np.asarray(Image.open(osp.join(img_dir, name))), img)
                  and np.array_equal(np.asarray(Image.open(osp.join(ann_dir, name))), label))
        except OSError:  # unreadable, e.g. truncated
            return False
        if not ok:
            return False
    return True


def _has_files(folder):
    return any(files for _, _, files in os.walk(folder))


def _marker_content(num_train, num_val, size, seed):
    return dict(version=GENERATOR_VERSION, num_train=num_train, num_val=num_val, size=size,
                seed=seed)


def _write_images(job):
    """Draw and save images ``start..stop-1`` of one split (a unit of work for a process pool)."""
    data_root, split, start, stop, size, seed = job
    for i in range(start, stop):
        img, label = generate_sample(_sample_rng(seed, split, i), size=size)
        _atomic_save(img, osp.join(data_root, 'img_dir', split, f'{i:05d}.png'))
        _atomic_save(label, osp.join(data_root, 'ann_dir', split, f'{i:05d}.png'))


def generate_dataset(data_root, num_train=2000, num_val=200, size=112, seed=0, verbose=True,
                     workers=None):
    """Write the data set into ``data_root`` in mmseg layout, or reuse it if already complete.

    An interrupted run leaves its ``.writing`` marker, so the next call starts over. A complete
    data set made with other parameters (its marker says so) is replaced. Files this function did
    not write are never removed: a folder holding anything else, or images without either
    marker that are not the data set asked for, is left alone (error).

    Args:
        data_root (str): target folder (created).
        num_train (int): training images. Default: 2000.
        num_val (int): validation images. Default: 200.
        size (int): image height and width in pixels. Default: 112.
        seed (int): generation seed. Default: 0.
        verbose (bool): print what is done. Default: True.
        workers (int, optional): processes drawing images (the result does not depend on it).
            Default: the number of CPU cores, at most 8.

    Returns:
        bool: True if images were written, False if an existing data set was reused.
    """
    params = dict(num_train=num_train, num_val=num_val, size=size, seed=seed)
    if dataset_is_complete(data_root, **params):
        if verbose:
            print(f'Reusing the synthetic shapes data set in {data_root}')
        return False
    ours = {'img_dir', 'ann_dir', MARKER, PENDING}
    if osp.isdir(data_root):
        entries = set(os.listdir(data_root))
        foreign = entries - ours
        if foreign:
            raise FileExistsError(
                f'{data_root} is not empty and holds no synthetic shapes data set '
                f'(found {sorted(foreign)[:5]}); choose another folder.')
        written_here = bool(entries & {MARKER, PENDING})
        if not written_here and any(_has_files(osp.join(data_root, sub))
                                    for sub in ('img_dir', 'ann_dir')):
            raise FileExistsError(
                f'{data_root} holds images and labels without the markers generate_dataset '
                f'writes, and they are not the data set asked for ({params}); nothing was '
                'changed. Pass the parameters they were made with, or move them away or choose '
                'another folder to write a new one.')
        for marker in (MARKER, PENDING):
            if osp.exists(osp.join(data_root, marker)):
                os.remove(osp.join(data_root, marker))
        for sub in ('img_dir', 'ann_dir'):
            shutil.rmtree(osp.join(data_root, sub), ignore_errors=True)
    if verbose:
        print(f'Writing the synthetic shapes data set ({num_train} train + {num_val} val images, '
              f'{size}x{size} px, seed {seed}) to {data_root}')
    os.makedirs(data_root, exist_ok=True)
    with open(osp.join(data_root, PENDING), 'w') as f:
        json.dump(_marker_content(**params), f)
    jobs = []
    for split, count in (('train', num_train), ('val', num_val)):
        os.makedirs(osp.join(data_root, 'img_dir', split), exist_ok=True)
        os.makedirs(osp.join(data_root, 'ann_dir', split), exist_ok=True)
        jobs += [(data_root, split, i, min(i + 100, count), size, seed)
                 for i in range(0, count, 100)]
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    if workers > 1 and len(jobs) > 1:
        # fork: the workers need only numpy and PIL, already loaded here.
        with multiprocessing.get_context('fork').Pool(min(workers, len(jobs))) as pool:
            pool.map(_write_images, jobs, chunksize=1)
    else:
        for job in jobs:
            _write_images(job)
    os.sync()  # the images reach the disk before the marker saying they are complete
    with atomic_write(osp.join(data_root, MARKER), 'w') as f:
        json.dump(_marker_content(**params), f)
    os.remove(osp.join(data_root, PENDING))
    return True


def main():
    parser = argparse.ArgumentParser(description='Write the synthetic shapes data set.')
    parser.add_argument('data_root', nargs='?', default='data/demo_shapes')
    parser.add_argument('--num-train', type=int, default=2000)
    parser.add_argument('--num-val', type=int, default=200)
    parser.add_argument('--size', type=int, default=112)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    generate_dataset(args.data_root, args.num_train, args.num_val, args.size, args.seed)
