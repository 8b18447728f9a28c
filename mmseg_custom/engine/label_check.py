"""Stop on label values that name no class, before they crash the loss or vanish from the mIoU,
and on evaluation batches whose images the data preprocessor cannot stack."""
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


def _samples(data_samples):
    """The data samples of a batch, flattened (test-time augmentation nests them by view)."""
    for sample in data_samples or []:
        if isinstance(sample, (list, tuple)):
            yield from _samples(sample)
        else:
            yield sample


def check_label_values(data_samples, num_classes, ignore_index=255):
    """Raise if a label map of the batch holds a value outside ``[0, num_classes)`` that is not
    ``ignore_index``.

    Such values make training stop in the loss (``IndexError: Target 200 is out of bounds``,
    naming no file) and are silently left out of mmseg's ``IoUMetric``.

    Args:
        data_samples (list[SegDataSample]): the batch's samples (nested lists are flattened),
            with ``gt_sem_seg`` as the pipeline loaded it (after ``reduce_zero_label`` and any
            ``label_map``).
        num_classes (int): the data set's number of classes.
        ignore_index (int): the label of pixels left out of loss and metric. Default: 255.
    """
    for sample in _samples(data_samples):
        if 'gt_sem_seg' not in sample:
            continue
        values = torch.unique(sample.gt_sem_seg.data)
        bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
        if len(bad):
            path = sample.metainfo.get('seg_map_path', 'a label map')
            reduced = (' (as loaded: reduce_zero_label maps file value v to v - 1, 0 to '
                       f'{ignore_index})' if sample.metainfo.get('reduce_zero_label') else '')
            shown = ', '.join(str(v) for v in bad[:10].tolist()) + ', ...' * (len(bad) > 10)
            raise ValueError(
                f'{path}: label values {shown}{reduced} are not classes of this data set '
                f'(0..{num_classes - 1}) nor the ignore index {ignore_index}. Fix the label file, '
                f'map those values to {ignore_index} (the data set\'s label_map or '
                'reduce_zero_label), or give the data set and the model as many classes as '
                'the labels use.')


def check_eval_batch_sizes(data_batch, split):
    """Raise, naming the files, if an evaluation batch holds images of different sizes (after
    the test pipeline): mmseg's ``SegDataPreProcessor`` stacks evaluation images without padding
    and otherwise stops with a bare ``The image size in a batch should be the same``."""
    inputs = data_batch.get('inputs')
    if not isinstance(inputs, (list, tuple)) or len(inputs) < 2 or not all(
            isinstance(x, torch.Tensor) for x in inputs):
        return  # test-time augmentation nests the views; a tensor is already stacked
    sizes = [tuple(x.shape[-2:]) for x in inputs]
    if len(set(sizes)) == 1:
        return
    samples = list(_samples(data_batch.get('data_samples')))
    paths = [s.metainfo.get('img_path', f'image {i}') for i, s in enumerate(samples)]
    shown = ', '.join(f'{p} ({h}x{w} px)' for p, (h, w) in list(zip(paths, sizes))[:4])
    raise ValueError(
        f'A {split} batch holds images of different sizes after the test pipeline: {shown}. '
        'mmseg stacks evaluation images without padding. Set '
        f'{split}_dataloader.batch_size=1 (mmseg\'s setting for data sets of mixed sizes), or '
        'resize every image to one size in the test pipeline.')


@HOOKS.register_module()
class SegLabelCheckHook(Hook):
    """Checks every batch's label maps (:func:`check_label_values`) before the model sees them,
    in training, validation and testing, for any data set, and that an evaluation batch's images
    can be stacked (:func:`check_eval_batch_sizes`) where the data preprocessor does not pad them.

    The number of classes is the data set's (``len(metainfo['classes'])``); the ignore index the
    decode head's (``ignore_index``, 255 by default). Costs one ``torch.unique`` per label map.
    """
    priority = 'VERY_HIGH'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._check(runner, runner.train_dataloader, data_batch)

    def before_val_iter(self, runner, batch_idx, data_batch=None):
        self._check(runner, runner.val_dataloader, data_batch, 'val')

    def before_test_iter(self, runner, batch_idx, data_batch=None):
        self._check(runner, runner.test_dataloader, data_batch, 'test')

    @staticmethod
    def _check(runner, dataloader, data_batch, eval_split=None):
        if not data_batch:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        model = getattr(model, 'module', model)  # SegTTAModel holds the segmentor as .module
        preprocessor = getattr(model, 'data_preprocessor', None)
        if eval_split and not getattr(preprocessor, 'test_cfg', None):  # no padding at test
            check_eval_batch_sizes(data_batch, eval_split)
        classes = getattr(dataloader.dataset, 'metainfo', {}).get('classes')
        if not classes:
            return
        ignore_index = getattr(getattr(model, 'decode_head', None), 'ignore_index', 255)
        check_label_values(data_batch.get('data_samples'), len(classes), ignore_index)
