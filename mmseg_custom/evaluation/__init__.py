"""Metrics: per-domain IoU for domain-generalisation benchmarks."""
from .dg_iou_metric import DGIoUMetric

__all__ = ['DGIoUMetric']
