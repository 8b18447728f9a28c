"""mmcv's ``MultiScaleDeformableAttention`` with its sampling done by ``mmseg_custom.ops``."""
from mmcv.ops import MultiScaleDeformableAttention as MMCVMultiScaleDeformableAttention

from .multi_scale_deform_attn import multi_scale_deformable_attn


class MultiScaleDeformableAttention(MMCVMultiScaleDeformableAttention):
    """Deformable attention of Deformable DETR, a drop-in for mmcv's module.

    Same arguments, parameters, initialisation and checkpoint keys as
    ``mmcv.ops.MultiScaleDeformableAttention`` (see it for the arguments); only the sampling
    differs: it runs on :func:`~mmseg_custom.ops.multi_scale_deformable_attn`, i.e. on this
    repository's compiled kernels on CPU and on CUDA where built, and on the PyTorch reference
    elsewhere (mmcv's module uses the reference on CPU).
    """

    def forward(self, query, key=None, value=None, identity=None, query_pos=None,
                key_padding_mask=None, reference_points=None, spatial_shapes=None,
                level_start_index=None, **kwargs):
        """Attend from each query to points sampled around its reference points.

        Args:
            query (Tensor): (bs, num_queries, embed_dims), or (num_queries, bs, embed_dims)
                when ``batch_first`` is False.
            key (Tensor, optional): unused; deformable attention has no keys.
            value (Tensor, optional): (bs, num_keys, embed_dims) (same layout rule as
                ``query``), the levels flattened one after another. Default: ``query``.
            identity (Tensor, optional): added to the output, shaped as ``query``.
                Default: ``query`` (before ``query_pos`` is added).
            query_pos (Tensor, optional): positional encoding added to ``query``.
            key_padding_mask (Tensor, optional): (bs, num_keys) bool, True for padding keys,
                whose values are zeroed.
            reference_points (Tensor): (bs, num_queries, num_levels, 2) normalised (x, y), or
                (bs, num_queries, num_levels, 4) boxes (cx, cy, w, h).
            spatial_shapes (Tensor): (num_levels, 2) int64 (H, W) of each level.
            level_start_index (Tensor): (num_levels,) int64 index of each level's first key.

        Returns:
            Tensor: shaped as ``query``.
        """
        value = query if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.transpose(0, 1), value.transpose(0, 1)
        bs, num_queries, _ = query.shape
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, value.shape[1], self.num_heads, -1)

        head_shape = (bs, num_queries, self.num_heads, self.num_levels, self.num_points)
        offsets = self.sampling_offsets(query).view(*head_shape, 2)
        # Softmax over all points of all levels of a head.
        weights = self.attention_weights(query).view(*head_shape[:3], -1).softmax(-1)
        weights = weights.view(head_shape)
        output = multi_scale_deformable_attn(
            value, spatial_shapes, level_start_index,
            self._sampling_locations(reference_points, offsets, spatial_shapes), weights,
            self.im2col_step)

        output = self.output_proj(output)
        if not self.batch_first:
            output = output.transpose(0, 1)
        return self.dropout(output) + identity

    def _sampling_locations(self, reference_points, offsets, spatial_shapes):
        """Locations (bs, num_queries, num_heads, num_levels, num_points, 2) in [0, 1]."""
        refs = reference_points[:, :, None, :, None]
        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level.
            wh = spatial_shapes.flip(-1).to(offsets.dtype)
            return refs + offsets / wh[None, None, None, :, None]
        if reference_points.shape[-1] == 4:
            # Offsets are in half box sizes, spread over the points.
            return refs[..., :2] + offsets / self.num_points * refs[..., 2:] * 0.5
        raise ValueError('reference_points must end in 2 (x, y) or 4 (cx, cy, w, h), got '
                         f'{reference_points.shape[-1]}')
