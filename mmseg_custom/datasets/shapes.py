"""mmseg data set class for the synthetic shapes data (see ``synthetic_shapes``)."""
import os.path as osp

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .synthetic_shapes import CLASSES, MARKER, PALETTE, PENDING, split_problem


@DATASETS.register_module()
class SyntheticShapesDataset(BaseSegDataset):
    """Procedural shapes and textures (background + 5 classes), written by ``generate_dataset``.

    Layout: ``img_dir/{train,val}/*.png`` and ``ann_dir/{train,val}/*.png`` under ``data_root``,
    labels are class indices with 0 = background (a real class here: no ``reduce_zero_label``).

    Args:
        img_suffix (str): image file suffix. Default: '.png'.
        seg_map_suffix (str): label file suffix. Default: '.png'.
        **kwargs: passed to :class:`mmseg.datasets.BaseSegDataset`.
    """
    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(self, img_suffix='.png', seg_map_suffix='.png', **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=False, **kwargs)

    def load_data_list(self):
        """The files, once they are known to be complete: by the marker written last, or by
        their content where a copy left the hidden marker behind."""
        if self.data_root and not osp.isfile(osp.join(self.data_root, MARKER)):
            if osp.exists(osp.join(self.data_root, PENDING)):
                problem = 'writing it was interrupted'
            else:
                problem = split_problem(self.data_prefix['img_path'],
                                        self.data_prefix['seg_map_path'])
            if problem is not None:
                raise FileNotFoundError(
                    f'No complete synthetic shapes data set in {self.data_root}: {problem}. '
                    f'Write it with `python -m mmseg_custom.datasets {self.data_root}` '
                    '(tools/demo.py does this by itself; neither removes files it did not '
                    'write).')
        return super().load_data_list()
