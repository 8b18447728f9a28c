"""Helpers shared by the tools."""
from .atomic import atomic_write, write_atomic

__all__ = ['atomic_write', 'write_atomic']
