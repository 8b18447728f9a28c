"""A user's own data set in plain folders, read as mmseg's ``BaseSegDataset`` reads it.

``tools/new_dataset.py`` uses this module: :func:`find_splits` finds the layout (``images/`` +
``masks/``, optionally with ``train/``/``val/`` subfolders or split files) and pairs every image
with its mask; :func:`scan_pairs` reads every pair once, collects every problem (unreadable
files, size mismatches, mask colours not in the palette, class ids above the class list) and
counts the class pixels; :func:`convert_masks` writes class-id PNGs where the masks are
colour-coded. Nothing here writes into the data folder.
"""
import os
import os.path as osp
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')
MASK_EXTS = ('.png', '.tif', '.tiff', '.bmp')  # lossless: a label value must survive saving
IMAGE_DIRS = ('images', 'imgs', 'img', 'img_dir', 'JPEGImages')
MASK_DIRS = ('masks', 'labels', 'annotations', 'ann_dir', 'SegmentationClass')
SPLIT_NAMES = {'train': ('train', 'training'), 'val': ('val', 'validation', 'valid')}
IGNORE_INDEX = 255  # mmseg's: the decode heads, the data preprocessor's padding, IoUMetric
SHOWN = 8  # files named per problem; the rest are counted


class DataError(ValueError):
    """Problems with a data folder, one paragraph each, every one naming its files."""

    def __init__(self, problems: List[str]):
        self.problems = list(problems)
        super().__init__('\n\n'.join(self.problems))


def listing(items, shown=SHOWN) -> str:
    """``a, b, c and 7 more``."""
    items = [str(i) for i in items]
    text = ', '.join(items[:shown])
    return text + (f' and {len(items) - shown} more' if len(items) > shown else '')


def count(n: int, noun: str, verb: str = '', plural_verb: str = '') -> str:
    """``1 mask holds``, ``3 masks hold``."""
    words = [f'{n} {noun}{"s" * (n != 1)}', verb if n == 1 else plural_verb]
    return ' '.join(w for w in words if w)


def _why(err, path) -> str:
    """The reader's message without the path, which the problem names already."""
    return f"{type(err).__name__}: {str(err).replace(repr(path), '').replace(path, '').strip()}"


def voc_palette(n: int) -> List[List[int]]:
    """The PASCAL VOC colour map (class 0 black, 1 dark red, 2 dark green, ...)."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append([r, g, b])
    return palette


# ---------------------------------------------------------------------------- classes file
@dataclass
class ClassList:
    """Class names in id order, their colours (all or none), and the colour of the ignore
    label (a ``255 name R G B`` line) where colour-coded masks have one."""
    names: List[str]
    colours: Optional[List[Tuple[int, int, int]]] = None
    ignore_colours: List[Tuple[int, int, int]] = field(default_factory=list)


def _colour(tokens) -> Optional[Tuple[Tuple[int, int, int], int]]:
    """(colour, tokens it took) where the line ends in ``R G B`` or ``#rrggbb``."""
    if tokens and re.fullmatch(r'#[0-9a-fA-F]{6}', tokens[-1]):
        h = tokens[-1]
        return tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)), 1
    if len(tokens) >= 4 and all(re.fullmatch(r'\d{1,3}', t) and int(t) < 256
                                for t in tokens[-3:]):
        return tuple(int(t) for t in tokens[-3:]), 3
    return None


def read_classes(path: str) -> ClassList:
    """Read a classes file: one class per line, in id order, optionally with an id first and a
    colour last (``R G B`` or ``#rrggbb``); ``255 name [colour]`` names the ignore label.

    ``#`` at a line's start and blank lines are skipped; commas count as spaces::

        background 0 0 0
        road 128 64 128
        traffic light #fa961e
        255 void 224 224 192
    """
    entries, problems = [], []
    with open(path, encoding='utf-8-sig') as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith('#'):
            continue
        tokens = [t for t in re.split(r'[\s,;]+', text) if t]
        found = _colour(tokens)
        colour = None
        if found:
            colour, used = found
            tokens = tokens[:-used]
        index = None
        if len(tokens) > 1 and re.fullmatch(r'\d+', tokens[0]):
            index, tokens = int(tokens[0]), tokens[1:]
        if not tokens:
            problems.append(f'{path}, line {number}: {line!r} has no class name.')
            continue
        entries.append((number, index, ' '.join(tokens), colour))
    ignore = [e for e in entries if e[1] == IGNORE_INDEX]
    classes = [e for e in entries if e[1] != IGNORE_INDEX]
    if not classes:
        problems.append(f'{path} names no class: write one class name per line, in id order.')
    ids = [e[1] for e in classes]
    if any(i is not None for i in ids) and sorted(ids, key=lambda i: -1 if i is None else i) \
            != list(range(len(classes))):
        problems.append(
            f'{path}: the class ids {listing(ids, 20)} are not 0..{len(classes) - 1}, each once. '
            f'Number the classes 0, 1, 2, ... (ids are optional; {IGNORE_INDEX} names the ignore '
            'label), or leave the ids out and list the classes in id order.')
    with_colour = [e for e in classes if e[3] is not None]
    if with_colour and len(with_colour) != len(classes):
        problems.append(
            f'{path}: classes on lines {listing([e[0] for e in classes if e[3] is None])} have '
            'no colour while others have one. Give every class a colour (R G B or #rrggbb), or '
            'none.')
    colours = [e[3] for e in classes]
    repeated = [c for c, n in Counter(colours).items() if c is not None and n > 1]
    if repeated:
        problems.append(f'{path}: the colours {listing(repeated)} are given to several classes; '
                        'a colour must name one class.')
    if problems:
        raise DataError(problems)
    if ids and ids[0] is not None:
        classes.sort(key=lambda e: e[1])
    return ClassList(names=[e[2] for e in classes],
                     colours=[e[3] for e in classes] if with_colour else None,
                     ignore_colours=[e[3] for e in ignore if e[3] is not None])


# ---------------------------------------------------------------------------- layout
@dataclass
class Split:
    """One split: folders relative to the data folder, and its pairs by relative stem."""
    img_dir: str
    mask_dir: str
    pairs: Dict[str, Tuple[str, str]]  # stem -> (image file, mask file), relative to the dirs
    from_folder: bool = True  # every pair of the folders: mmseg can list them itself


@dataclass
class Layout:
    description: str
    splits: Dict[str, Split]  # 'train', 'val'
    img_suffix: str
    seg_map_suffix: str  # as BaseSegDataset takes it: the mask's name is stem + seg_map_suffix
    notes: List[str] = field(default_factory=list)


def _first_dir(root, names):
    for name in names:
        if osp.isdir(osp.join(root, name)):
            return name
    lower = {n.lower(): n for n in os.listdir(root) if osp.isdir(osp.join(root, n))} \
        if osp.isdir(root) else {}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def _files(root, exts=None):
    """Relative paths of the files under ``root`` (recursive, hidden files skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        for name in sorted(filenames):
            if name.startswith('.'):
                continue
            rel = osp.relpath(osp.join(dirpath, name), root)
            if exts is None or osp.splitext(name)[1].lower() in exts:
                found.append(rel)
    return found


def _stem(rel):
    return osp.splitext(rel)[0].replace(os.sep, '/')


def _mask_tail(image_stems, mask_stems) -> str:
    """The tail every mask name adds to its image's (``_mask`` in ``a.jpg``/``a_mask.png``),
    '' where the names match."""
    direct = len(image_stems & mask_stems)
    tails = Counter()
    for m in mask_stems:
        for pos in (i for i, ch in enumerate(m) if ch in '_-.' and i > 0):
            if m[:pos] in image_stems:
                tails[m[pos:]] += 1
    if tails:
        tail, count = tails.most_common(1)[0]
        if count > direct:
            return tail
    return ''


def pair_folder(data_dir, img_dir, mask_dir, problems, notes):
    """(pairs, img_suffix, mask suffix) of one image folder and its mask folder; the problems
    (images without masks, masks without images, mixed or lossy formats) are appended."""
    img_root, mask_root = osp.join(data_dir, img_dir), osp.join(data_dir, mask_dir)
    every = _files(img_root)
    images = [f for f in every if osp.splitext(f)[1].lower() in IMAGE_EXTS]
    others = [f for f in every if f not in set(images)]
    if others:
        notes.append(f'{len(others)} files in {img_root} are not images and are left out: '
                     f'{listing(others, 4)}')
    masks = _files(mask_root, IMAGE_EXTS)
    by_stem = {}
    for rel in images:
        by_stem.setdefault(_stem(rel), []).append(rel)
    twins = [' / '.join(v) for v in by_stem.values() if len(v) > 1]
    if twins:
        problems.append(f'Images in {img_root} share a name (which one has the mask?): '
                        f'{listing(twins)}. Rename or remove one of each.')
    image_of = {s: v[0] for s, v in by_stem.items()}
    mask_by_stem = {}
    for rel in masks:
        mask_by_stem.setdefault(_stem(rel), rel)
    tail = _mask_tail(set(image_of), set(mask_by_stem))
    mask_of = {}
    for s, rel in mask_by_stem.items():
        if s.endswith(tail):
            mask_of.setdefault(s[:len(s) - len(tail)], rel)
    orphans = [rel for s, rel in mask_by_stem.items()
               if not (s.endswith(tail) and s[:len(s) - len(tail)] in image_of)]
    unmasked = [image_of[s] for s in image_of if s not in mask_of]
    if unmasked:
        problems.append(
            f'{count(len(unmasked), "image")} in {img_root} without a mask in {mask_root} '
            f'(a mask is named as its image, {"with " + repr(tail) + " added, " if tail else ""}'
            f'in any of {", ".join(MASK_EXTS)}): {listing(unmasked)}. Add their masks or move '
            'the images out of the folder.')
    if orphans:
        problems.append(f'{count(len(orphans), "mask")} in {mask_root} without an image in '
                        f'{img_root}: {listing(orphans)}. Add their images or move the masks '
                        'out.')
    pairs = {s: (image_of[s], mask_of[s]) for s in sorted(image_of) if s in mask_of}
    img_exts = Counter(osp.splitext(i)[1] for i, _ in pairs.values())
    mask_exts = Counter(osp.splitext(m)[1] for _, m in pairs.values())
    lossy = [m for _, m in pairs.values() if osp.splitext(m)[1].lower() not in MASK_EXTS]
    if lossy:
        problems.append(
            f'{count(len(lossy), "JPEG mask")} in {mask_root}: {listing(lossy)}. JPEG '
            'compression changes the values (and colours) along every edge, so they no longer '
            'name classes. Save the masks as PNG.')
    for what, exts, root in (('images', img_exts, img_root), ('masks', mask_exts, mask_root)):
        if len(exts) > 1:
            counts = ', '.join(f'{n} {e}' for e, n in exts.most_common())
            problems.append(
                f'The {what} in {root} have several file types ({counts}); mmseg\'s '
                f'BaseSegDataset reads one per folder. Save them in one format (e.g. with '
                f'PIL: Image.open(f).save(f.with_suffix(".png"))).')
    img_suffix = img_exts.most_common(1)[0][0] if img_exts else '.png'
    mask_suffix = tail + (mask_exts.most_common(1)[0][0] if mask_exts else '.png')
    return pairs, img_suffix, mask_suffix


def _read_split_file(path, images_dirname):
    """Stems listed in a split file: names with or without extension or image folder, one a
    line (a second column, e.g. the mask's name, is ignored)."""
    stems = []
    with open(path, encoding='utf-8-sig') as f:
        for line in f:
            text = line.strip()
            if not text or text.startswith('#'):
                continue
            name = text.split()[0].replace('\\', '/')
            if name.startswith(images_dirname + '/'):
                name = name[len(images_dirname) + 1:]
            root, ext = osp.splitext(name)
            stems.append(root if ext.lower() in IMAGE_EXTS else name)
    return stems


def find_split_files(data_dir, train_list=None, val_list=None):
    """{'train': path, 'val': path} of the split files given or found in the data folder
    (``train.txt``/``val.txt`` there, in ``splits/`` or in VOC's ``ImageSets/Segmentation/``)."""
    found = {}
    for split, given in (('train', train_list), ('val', val_list)):
        if given:
            found[split] = given
            continue
        for folder in ('', 'splits', osp.join('ImageSets', 'Segmentation')):
            for name in SPLIT_NAMES[split]:
                path = osp.join(data_dir, folder, name + '.txt')
                if osp.isfile(path):
                    found.setdefault(split, path)
    return found


def seeded_split(stems, fraction, seed):
    """(train, val) stems: ``fraction`` of them (at least one) to val, drawn with ``seed``."""
    order = sorted(stems)
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(fraction * len(order))), len(order) - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def find_splits(data_dir, train_list=None, val_list=None, val_fraction=0.2, seed=0) -> Layout:
    """The layout of ``data_dir`` and its train and val pairs.

    Layouts: ``images/`` + ``masks/`` (no split: a seeded one; or split files),
    ``images/{train,val}`` + ``masks/{train,val}``, ``{train,val}/images`` + ``{train,val}/masks``
    (a missing val folder: a seeded split of train). Raises :class:`DataError` naming every
    problem found.
    """
    if not osp.isdir(data_dir):
        raise DataError([f'{data_dir} is not a folder.'])
    problems, notes = [], []
    img_name, mask_name = _first_dir(data_dir, IMAGE_DIRS), _first_dir(data_dir, MASK_DIRS)
    folders = {}  # split -> (img_dir, mask_dir)
    if img_name and mask_name:
        sub = {s: _first_dir(osp.join(data_dir, img_name), names)
               for s, names in SPLIT_NAMES.items()}
        if sub['train']:
            description = f'{img_name}/{{train,val}} + {mask_name}/{{train,val}}'
            for s, d in sub.items():
                if d:
                    m = _first_dir(osp.join(data_dir, mask_name), [d])
                    if not m:
                        problems.append(f'{osp.join(data_dir, img_name, d)} has no mask folder '
                                        f'{osp.join(data_dir, mask_name, d)}.')
                    folders[s] = (f'{img_name}/{d}', f'{mask_name}/{m or d}')
        else:
            description = f'{img_name}/ + {mask_name}/'
            folders[None] = (img_name, mask_name)
    else:
        sub = {s: _first_dir(data_dir, names) for s, names in SPLIT_NAMES.items()}
        if sub['train']:
            description = ' + '.join(f'{d}/{{images,masks}}' for d in sub.values() if d)
            for s, d in sub.items():
                if not d:
                    continue
                i = _first_dir(osp.join(data_dir, d), IMAGE_DIRS)
                m = _first_dir(osp.join(data_dir, d), MASK_DIRS)
                if not (i and m):
                    problems.append(f'{osp.join(data_dir, d)} has no images/ and masks/ folders.')
                    continue
                folders[s] = (f'{d}/{i}', f'{d}/{m}')
        else:
            entries = sorted(os.listdir(data_dir))
            raise DataError([
                f'{data_dir} has no image and mask folders (it holds: {listing(entries)}). '
                'Expected images/ and masks/ (or images/{train,val} and masks/{train,val}, or '
                'train/{images,masks} and val/{images,masks}); a mask has its image\'s name.'])
    if problems:
        raise DataError(problems)

    splits, suffixes = {}, []
    for s, (img_dir, mask_dir) in folders.items():
        pairs, img_suffix, mask_suffix = pair_folder(data_dir, img_dir, mask_dir, problems, notes)
        suffixes.append((img_suffix, mask_suffix))
        splits[s] = Split(img_dir, mask_dir, pairs)
    if len(set(suffixes)) > 1:
        problems.append('The splits use different file types ('
                        + '; '.join(f'{s}: images {a}, masks {b}'
                                    for s, (a, b) in zip(folders, suffixes))
                        + '); save them in one format.')
    if problems:
        raise DataError(problems)
    img_suffix, mask_suffix = suffixes[0]

    if None in splits:  # one folder: split files, or a seeded split
        whole = splits.pop(None)
        lists = find_split_files(data_dir, train_list, val_list)
        listed = {}
        for s, path in lists.items():
            stems = _read_split_file(path, img_name)
            unknown = [x for x in stems if x not in whole.pairs]
            if unknown:
                problems.append(f'{path} lists {len(unknown)} images that have no pair in '
                                f'{osp.join(data_dir, img_name)}: {listing(unknown)}.')
            listed[s] = [x for x in dict.fromkeys(stems) if x in whole.pairs]
        if problems:
            raise DataError(problems)
        if 'train' in listed and 'val' in listed:
            description += ', split files ' + ', '.join(lists[s] for s in ('train', 'val'))
            both = set(listed['train']) & set(listed['val'])
            if both:
                notes.append(f'{len(both)} images are in both split files: {listing(both, 4)}')
            left = set(whole.pairs) - set(listed['train']) - set(listed['val'])
            if left:
                notes.append(f'{len(left)} pairs are in neither split file and are left out: '
                             f'{listing(sorted(left), 4)}')
        elif listed:
            (s, stems), = listed.items()
            other = [x for x in whole.pairs if x not in set(stems)]
            listed['val' if s == 'train' else 'train'] = other
            description += f', split file {lists[s]} (the other pairs: the other split)'
        else:
            if len(whole.pairs) < 2:
                raise DataError([f'{osp.join(data_dir, img_name)} holds {len(whole.pairs)} '
                                 'image with a mask: training and validation need at least 2.'])
            listed['train'], listed['val'] = seeded_split(list(whole.pairs), val_fraction, seed)
            description += (f', no split: val is a seeded {val_fraction:.0%} of the pairs '
                            f'(seed {seed})')
        for s in ('train', 'val'):
            splits[s] = Split(whole.img_dir, whole.mask_dir,
                              {x: whole.pairs[x] for x in listed[s]}, from_folder=False)
    elif 'val' not in splits:
        train = splits['train']
        if len(train.pairs) < 2:
            raise DataError([f'{osp.join(data_dir, train.img_dir)} holds {len(train.pairs)} '
                             'image with a mask: training and validation need at least 2.'])
        tr, va = seeded_split(list(train.pairs), val_fraction, seed)
        splits['train'] = Split(train.img_dir, train.mask_dir,
                                {x: train.pairs[x] for x in tr}, from_folder=False)
        splits['val'] = Split(train.img_dir, train.mask_dir,
                              {x: train.pairs[x] for x in va}, from_folder=False)
        description += (f', no val folder: val is a seeded {val_fraction:.0%} of train '
                        f'(seed {seed})')
    for s in ('train', 'val'):
        if not splits[s].pairs:
            problems.append(f'The {s} split has no image with a mask '
                            f'({osp.join(data_dir, splits[s].img_dir)}).')
    if problems:
        raise DataError(problems)
    return Layout(description, splits, img_suffix, mask_suffix, notes)


# ---------------------------------------------------------------------------- contents
def _load_mask(path):
    """(kind, array): 'ids' (H, W) for label maps, 'rgb' (H, W, 3) for colour images;
    the P palette of a paletted PNG as a third element (or None)."""
    with Image.open(path) as img:
        img.load()
        palette = img.getpalette() if img.mode == 'P' else None
        if img.mode in ('RGB', 'RGBA', 'CMYK', 'YCbCr'):
            return 'rgb', np.asarray(img.convert('RGB')), None
        if img.mode == 'LA':
            return 'ids', np.asarray(img.getchannel('L')), None
        return 'ids', np.asarray(img), palette


def _colour_codes(rgb):
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _code_colour(code):
    return (int(code) >> 16, (int(code) >> 8) & 255, int(code) & 255)


@dataclass
class Scan:
    """What :func:`scan_pairs` found: the masks' kind, class pixel counts per split (index
    255 counts the ignore label), images holding each class, image sizes, the class list."""
    kind: str  # 'ids', 'gray-rgb' (R=G=B class ids saved as RGB), 'colour'
    classes: List[str]
    palette: List[List[int]]
    pixels: Dict[str, np.ndarray]  # split -> (256,) int64
    images_with: Dict[str, np.ndarray]  # split -> (256,) int64
    sizes: List[Tuple[int, int]]  # (w, h) of every image
    convert: bool  # masks must be rewritten as class-id PNGs
    value_map: Optional[np.ndarray] = None  # (256,) file value -> class id, for --binary
    colour_map: Optional[Dict[int, int]] = None  # RGB code -> class id, colour masks
    palette_source: str = ''


def scan_pairs(data_dir, layout: Layout, classes: Optional[ClassList], binary=False,
               progress=None) -> Scan:
    """Read every pair once: the image's header and the whole mask. Raises :class:`DataError`
    with one paragraph per kind of problem, naming the files: unreadable files, an image and
    its mask of different sizes, masks of mixed kinds, colour masks without a palette, mask
    colours not in the palette, values above 255, class ids beyond the class list, and 0/255
    masks without ``binary``. ``progress(done, total)`` is called after each pair."""
    unreadable, mismatched, sizes, p_palette = [], [], [], None
    total, done = sum(len(sp.pairs) for sp in layout.splits.values()), 0
    records = []  # (split, mask path, 'ids' | 'rgb', values or RGB codes present, their counts)
    for split_name, split in layout.splits.items():
        for img_rel, mask_rel in split.pairs.values():
            done += 1
            if progress:
                progress(done, total)
            img_path = osp.join(data_dir, split.img_dir, img_rel)
            mask_path = osp.join(data_dir, split.mask_dir, mask_rel)
            try:
                with Image.open(img_path) as img:
                    img_size = img.size
                sizes.append(img_size)
            except (OSError, ValueError) as err:
                unreadable.append(f'{img_path} ({_why(err, img_path)})')
                img_size = None
            try:
                kind, array, palette = _load_mask(mask_path)
            except (OSError, ValueError) as err:
                unreadable.append(f'{mask_path} ({_why(err, mask_path)})')
                continue
            mask_size = (array.shape[1], array.shape[0])
            if img_size and img_size != mask_size:
                mismatched.append(f'{img_path} ({img_size[0]}x{img_size[1]}) and {mask_path} '
                                  f'({mask_size[0]}x{mask_size[1]})')
            if kind == 'rgb':
                uniq, counts = np.unique(_colour_codes(array), return_counts=True)
            elif array.dtype.kind not in 'biu' or array.min(initial=0) < 0:
                unreadable.append(f'{mask_path} (holds {array.dtype} values, negative or '
                                  'fractional: not class ids)')
                continue
            else:
                if palette is not None and p_palette is None:
                    p_palette = palette
                counts = np.bincount(array.ravel().astype(np.int64))
                uniq = np.nonzero(counts)[0]
                counts = counts[uniq]
            records.append((split_name, mask_path, kind, uniq, counts))

    problems = []
    if unreadable:
        problems.append(f'{count(len(unreadable), "file")} cannot be read as images (not an image, '
                        f'empty or cut off): {listing(unreadable)}. Replace or remove them '
                        '(with their image or mask).')
    if mismatched:
        problems.append(
            f'{count(len(mismatched), "image")} whose mask differs in size: {listing(mismatched)}. '
            'A mask must have its image\'s size: resize the mask with nearest-neighbour '
            'interpolation (or the image), or remove the pair.')
    kinds = Counter(r[2] for r in records)
    if len(kinds) > 1:
        problems.append(
            f'The masks mix class-id images ({kinds["ids"]}) and colour images ({kinds["rgb"]}, '
            f'e.g. {listing([r[1] for r in records if r[2] == "rgb"], 3)}). Save all of them '
            'one way.')
    if problems:
        raise DataError(problems)

    colour_map, kind = None, 'ids'
    if kinds.get('rgb'):
        gray = all(((c >> 16) == ((c >> 8) & 255) == (c & 255)) for r in records
                   for c in r[3].tolist())
        if classes is not None and classes.colours:
            kind = 'colour'
            colour_map = {(r << 16) | (g << 8) | b: i
                          for i, (r, g, b) in enumerate(classes.colours)}
            colour_map.update({(r << 16) | (g << 8) | b: IGNORE_INDEX
                               for r, g, b in classes.ignore_colours})
            unknown = [(r[1], [_code_colour(c) for c in r[3].tolist() if c not in colour_map])
                       for r in records]
            unknown = [f'{p} ({listing(c, 4)})' for p, c in unknown if c]
            if unknown:
                raise DataError([
                    f'{count(len(unknown), "mask", "holds", "hold")} colours that are not in '
                    f'the palette of the classes file: {listing(unknown)}. Add those colours '
                    f'to the classes file (a class line "name R G B", or "{IGNORE_INDEX} '
                    'ignore R G B" for pixels to leave out of training and scoring), or fix the '
                    'masks (resizing or anti-aliasing blends colours: resize with '
                    'nearest-neighbour interpolation).'])
            records = [(s, p, k, np.array([colour_map[c] for c in u.tolist()]), n)
                       for s, p, k, u, n in records]
        elif gray:
            kind = 'gray-rgb'
            records = [(s, p, k, u & 255, n) for s, p, k, u, n in records]
        else:
            found = Counter()
            for r in records:
                found.update(_code_colour(c) for c in r[3].tolist())
            common = [f'{c} ({n} masks)' for c, n in found.most_common(12)]
            raise DataError([
                'The masks are colour images, so their classes need a palette: give a classes '
                'file (--classes classes.txt) with one line "name R G B" per class in id '
                f'order, and "{IGNORE_INDEX} ignore R G B" for a colour that marks pixels to '
                f'leave out. Colours found: {listing(common, 12)}'
                + (f' ({len(found)} in all)' if len(found) > 12 else '') + '.'])

    high = [f'{r[1]} ({listing(r[3][r[3] > IGNORE_INDEX].tolist(), 4)})' for r in records
            if r[3].max(initial=0) > IGNORE_INDEX]
    if high:
        raise DataError([
            f'{count(len(high), "mask", "holds", "hold")} values above {IGNORE_INDEX}: '
            f'{listing(high)}. mmseg reads '
            'label maps as 8 bits: at most 255 classes (ids 0..254), 255 is the ignore index.'])
    found = sorted(set(np.concatenate([r[3] for r in records]).tolist())) if records else []
    value_map = None
    if binary:
        others = [v for v in found if v != 0]
        if kind == 'colour' or len(others) > 1:
            raise DataError([
                f'--binary is for masks of 0 (background) and one other value (the object); '
                f'these hold {listing(found, 12)}: give a classes file for masks of several '
                'classes.'])
        names = classes.names if classes else ['background', 'foreground']
        if len(names) != 2:
            raise DataError([f'--binary makes 2 classes, but the classes file names '
                             f'{len(names)}: {listing(names)}.'])
        value_map = np.ones(256, np.int64)
        value_map[0] = 0
    elif classes is not None:
        names = classes.names
        beyond = [(r[1], r[3][(r[3] >= len(names)) & (r[3] != IGNORE_INDEX)]) for r in records]
        beyond = [f'{p} ({listing(v.tolist(), 6)})' for p, v in beyond if len(v)]
        if beyond:
            raise DataError([
                f'{count(len(beyond), "mask", "holds", "hold")} class ids beyond the '
                f'{len(names)} classes of the '
                f'classes file (ids 0..{len(names) - 1}, and {IGNORE_INDEX} to ignore): '
                f'{listing(beyond)}. Add the missing classes to the classes file, or fix the '
                'masks.'])
    else:
        ids = [v for v in found if v != IGNORE_INDEX]
        if not ids:
            raise DataError([f'Every mask pixel is {IGNORE_INDEX}, the ignore index: nothing '
                             'to learn. Masks hold class ids 0, 1, 2, ...'])
        if len(ids) == 1:
            raise DataError([
                f'The masks hold only the values {listing(found)}. {IGNORE_INDEX} is the '
                'ignore index (pixels left out of training and scoring), so this would train '
                'one class. If the masks are black-and-white (0 background, 255 object), run '
                'with --binary; otherwise give masks of class ids 0, 1, 2, ...'])
        names = [f'class {i}' for i in range(max(ids) + 1)]

    pixels = {s: np.zeros(256, np.int64) for s in layout.splits}
    images_with = {s: np.zeros(256, np.int64) for s in layout.splits}
    for split_name, _, _, uniq, counts in records:
        ids = value_map[uniq] if value_map is not None else uniq
        per_class = np.bincount(ids, weights=counts, minlength=256).astype(np.int64)
        pixels[split_name] += per_class
        images_with[split_name] += per_class > 0

    n = len(names)
    if classes is not None and classes.colours:
        palette, source = [list(c) for c in classes.colours], 'the classes file'
    elif p_palette is not None and not binary and len(
            {tuple(p_palette[3 * i:3 * i + 3]) for i in range(n)}) == n:
        palette = [list(p_palette[3 * i:3 * i + 3]) for i in range(n)]
        source = 'the masks\' PNG palette'
    else:
        palette, source = voc_palette(n), 'the PASCAL VOC colour map'
    return Scan(kind=kind, classes=names, palette=palette, pixels=pixels,
                images_with=images_with, sizes=sizes, convert=kind != 'ids' or binary,
                value_map=value_map, colour_map=colour_map, palette_source=source)


def convert_masks(data_dir, layout: Layout, scan: Scan, out_dir) -> int:
    """Write every mask as a class-id PNG (mode L, 255 = ignore) under ``out_dir``, at the
    mask's relative path with ``.png``; returns the count. Only reads ``data_dir``."""
    written = 0
    for split in layout.splits.values():
        for stem, (_, mask_rel) in split.pairs.items():
            kind, array, _ = _load_mask(osp.join(data_dir, split.mask_dir, mask_rel))
            if kind == 'rgb':
                codes = _colour_codes(array)
                uniq, inverse = np.unique(codes, return_inverse=True)
                if scan.colour_map is not None:
                    lut = np.array([scan.colour_map[c] for c in uniq.tolist()], np.uint8)
                else:  # gray saved as RGB
                    lut = (uniq & 255).astype(np.uint8)
                ids = lut[inverse.reshape(codes.shape)]
            else:
                ids = array.astype(np.int64)
            if scan.value_map is not None:
                ids = scan.value_map[ids]
            path = osp.join(out_dir, split.mask_dir, stem + '.png')
            os.makedirs(osp.dirname(path), exist_ok=True)
            Image.fromarray(ids.astype(np.uint8), mode='L').save(path)
            written += 1
    return written
