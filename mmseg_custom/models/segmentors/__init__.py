from .batched_slide import BatchedSlideEncoderDecoder

__all__ = ['BatchedSlideEncoderDecoder']
