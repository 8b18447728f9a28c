"""IoU per target domain, as Rein's ``DGIoUMetric`` (official ``rein/dg_metrics.py``)."""
from collections import defaultdict
from typing import Dict, Sequence

from mmengine.logging import print_log
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class DGIoUMetric(IoUMetric):
    """mmseg's ``IoUMetric`` computed separately for each domain of a concatenated validation set.

    A sample belongs to the first of ``dataset_keys`` found in its label path (``seg_map_path``);
    metrics are reported as ``<key>_mIoU`` etc., plus ``mean_<metric>`` over ``mean_used_keys``
    (default: all keys). Unlike the official code, each sample of a batch is matched by its own
    path (the official uses the batch's first, the same at its batch size 1).

    Args:
        dataset_keys (Sequence[str]): Substrings naming the domains, e.g. ``['citys', 'bdd']``.
        mean_used_keys (Sequence[str]): Domains averaged into ``mean_*``. Default: all.
        Others: mmseg's ``IoUMetric``.
    """

    def __init__(self, dataset_keys: Sequence[str] = (), mean_used_keys: Sequence[str] = (),
                 **kwargs):
        super().__init__(**kwargs)
        if not dataset_keys:
            raise ValueError('DGIoUMetric needs dataset_keys (substrings of the label paths '
                             "naming each domain, e.g. ['citys', 'bdd', 'map'])")
        self.dataset_keys = list(dataset_keys)
        self.mean_used_keys = list(mean_used_keys) or self.dataset_keys

    def domain_of(self, path: str) -> str:
        return next((k for k in self.dataset_keys if k in path), 'unknown')

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        start = len(self.results)
        super().process(data_batch, data_samples)
        if self.format_only:
            return
        for i, sample in enumerate(data_samples):
            self.results[start + i] = (self.domain_of(sample['seg_map_path']),
                                       *self.results[start + i])

    def compute_metrics(self, results: list) -> Dict[str, float]:
        by_domain = defaultdict(list)
        for domain, *res in results:
            by_domain[domain].append(res)
        metrics, to_mean = {}, defaultdict(list)
        for domain, res in by_domain.items():
            print_log(f'---------- {domain}: {len(res)} samples ----------', logger='current')
            for k, v in super().compute_metrics(res).items():
                metrics[f'{domain}_{k}'] = v
                if domain in self.mean_used_keys:
                    to_mean[k].append(v)
        metrics.update({f'mean_{k}': sum(v) / len(v) for k, v in to_mean.items()})
        return metrics
