"""Any timm ViT as a trunk: the ``VisionTransformer`` family (DINOv2, CLIP, SigLIP, MAE, DeiT III)
and the ``Eva`` family (DINOv3, EVA02: RoPE), wrapped, not forked.

Token sharing (CTS, see ``token_sharing.py``) adds ``pad(x, value)`` and
``tokenize_shared(x, shared) -> (tokens, plan)``; a RoPE trunk gives each shared token the rotary
angles of its superpatch centre."""
import copy
from collections import OrderedDict
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS

from .. import pos_resize
from ..timm_weights import load_timm_weights, resolve_timm_weights
from .token_sharing import SharePlan
from .trunk import Trunk, centre_pad

# timm rotary embeddings whose table, computed in a traced graph, follows the input size. Others
# (EVA02's) enter a trace as the constant table of the traced grid.
ROPES_FOLLOWING_TRACED_SIZE = ('RotaryEmbeddingDinoV3', )


@MODELS.register_module()
class TimmViT(Trunk):
    """``timm.create_model(name, pretrained=False, ...)`` behind the trunk interface.

    Its maps equal timm's own ``forward_intermediates(x, indices, norm=True)`` of the same model
    (on the centre-padded input where a side is not a multiple of the patch). The classifier and
    pooling modules are dropped (timm's ``prune_intermediate_layers(prune_head=True)``).

    Args:
        name (str): timm model name, optionally with a tag, e.g. 'vit_small_patch16_dinov3',
            'vit_base_patch16_clip_224.openai'.
        pretrained (str | None): Weights read in ``init_weights()``: a file (timm's
            ``model.safetensors``, Meta's DINOv3/DINOv2 ``.pth``), a Hugging Face transformers
            folder (DINOv3, DINOv2), 'timm' (timm's hub file of ``name`` in the Hugging Face
            cache) or a DINOv3 name such as 'dinov3_small' (see ``timm_weights.DINOV3``).
            None: timm's random initialisation. Nothing is downloaded.
        patch_size (int | None): Expected patch size; an error if ``name`` has another. The
            model's own patch size is used when None.
        model_kwargs (dict | None): Extra arguments of ``timm.create_model`` (e.g. a smaller
            ``embed_dim``/``depth`` for tests and the demo, ``drop_path_rate``).
    """

    def __init__(self, name: str, pretrained: Optional[str] = None,
                 patch_size: Optional[int] = None, model_kwargs: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        import timm  # here, not at module level: DINOv2-only users never import timm
        if not timm.is_model(name.split('.')[0]):
            close = timm.list_models(f'*{name.split(".")[0].split("_")[0]}*')[:8]
            raise ValueError(f'TimmViT: unknown timm model {name!r} (timm {timm.__version__}); '
                             f'similar names: {close}. See timm.list_models().')
        self.name = name
        self.pretrained = pretrained
        kwargs = dict(num_classes=0, dynamic_img_size=True, **(model_kwargs or {}))
        self.model = timm.create_model(name, pretrained=False, **kwargs)
        self.family = type(self.model).__name__
        if self.family not in ('VisionTransformer', 'Eva'):
            raise ValueError(f'TimmViT: {name!r} is a timm {self.family}; VisionTransformer and '
                             'Eva models are supported.')
        patch_drop = type(getattr(self.model, 'patch_drop', None))
        if getattr(self.model, 'rope_mixed', False) or patch_drop not in (type(None), nn.Identity):
            raise ValueError(f'TimmViT: {name!r} uses per-block RoPE or patch dropout, which the '
                             'trunk interface does not carry.')
        self.model.prune_intermediate_layers(len(self.model.blocks), prune_head=True)
        # Trunk interface: linear layers run through their module's forward, so that module
        # wrappers (LoRA) take effect; timm's Eva attention with q/v biases would otherwise call
        # F.linear on qkv.weight. Separate bias addition: the same result, timm's own option.
        for m in self.model.modules():
            if getattr(m, 'qkv_bias_separate', True) is False:
                m.qkv_bias_separate = True
        self.embed_dims = self.model.embed_dim
        self.num_layers = len(self.model.blocks)
        self.patch_size = self.model.patch_embed.patch_size[0]
        if patch_size is not None and patch_size != self.patch_size:
            raise ValueError(f'TimmViT: the config says patch_size={patch_size}, but {name!r} has '
                             f'patch size {self.patch_size}: fix one of them.')
        self.num_prefix_tokens = self.model.num_prefix_tokens
        self.rope = getattr(self.model, 'rope', None)
        self._rope_cache: 'OrderedDict[tuple, torch.Tensor]' = OrderedDict()
        self._shared_rope: Optional[Tuple[SharePlan, torch.Tensor]] = None

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.blocks

    @classmethod
    def find_weights(cls, cfg: dict) -> Optional[str]:
        pretrained = cfg.get('pretrained')
        return resolve_timm_weights(pretrained, cfg['name']) if pretrained else None

    def init_weights(self):
        if self.pretrained is None:
            super().init_weights()  # runs timm's own init_weights() of the model
            return
        load_timm_weights(self.model, self.pretrained, self.name)
        self._is_init = True

    ROPE_CACHE_SIZE = 8  # grids kept: one training crop and a few test sizes

    def _cached(self, key: tuple, make) -> torch.Tensor:
        """``make()`` cached under ``key``, least recently used first out (inference on images
        of many sizes would otherwise keep one table per size forever)."""
        if key in self._rope_cache:
            self._rope_cache.move_to_end(key)
            return self._rope_cache[key]
        table = self._rope_cache[key] = make()
        while len(self._rope_cache) > self.ROPE_CACHE_SIZE:
            self._rope_cache.popitem(last=False)
        return table

    def rope_table(self, grid: Tuple[int, int], device: torch.device) -> Optional[torch.Tensor]:
        """Rotary table of a grid, cached per grid and device (None without RoPE); while
        tracing, not cached (see :meth:`_rope_embed`)."""
        if self.rope is None:
            return None
        if torch.jit.is_tracing() or (self.rope.training
                                      and getattr(self.rope, 'aug_active', False)):
            return self._rope_embed(self.rope, grid, device)  # traced, or random per step
        return self._cached((grid, device), lambda: self._rope_embed(self.rope, grid, device))

    @staticmethod
    def _rope_embed(rope: nn.Module, grid: Tuple[int, int], device: torch.device) -> torch.Tensor:
        """timm's rotary table of ``grid``. While tracing (ONNX export), the table of a rope that
        follows traced sizes is computed in the graph; any other rope's table is computed at the
        traced grid's integer size and enters the graph as a constant (``from_numpy`` results
        are constants of a trace), so that graph holds one input size."""
        if not torch.jit.is_tracing() or type(rope).__name__ in ROPES_FOLLOWING_TRACED_SIZE:
            return rope.get_embed(shape=list(grid)).to(device)
        table = rope.get_embed(shape=[int(g) for g in grid])
        return torch.from_numpy(table.detach().cpu().numpy().copy()).to(device)

    def tokenize(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Centre-pad, embed patches, add prefix tokens and absolute positions as timm does."""
        x = self.model.patch_embed(centre_pad(x, self.patch_size))  # (B, h, w, D)
        return self.model.norm_pre(self._pos_embed(x)), tuple(x.shape[1:3])

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, D) patch embeddings -> (B, P + h*w, D) with prefix tokens and positions."""
        if self.family == 'VisionTransformer' and not torch.jit.is_tracing():
            return self.model._pos_embed(x)
        return self._resampled_pos_embed(x)

    def pad(self, x: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        """The image (or a label map) as ``tokenize`` patchifies it."""
        return centre_pad(x, self.patch_size, value)

    def tokenize_shared(self, x: torch.Tensor,
                        shared: torch.Tensor) -> Tuple[torch.Tensor, SharePlan]:
        """``tokenize`` with the superpatches ``shared`` (B, S) as one token each (CTS): the
        patch embedding of the 2x2-mean downsampled region plus the 2x2 mean of the absolute
        position embeddings (RoPE positions: ``apply_block`` with the plan)."""
        m = self.model
        x = centre_pad(x, self.patch_size)
        patches = m.patch_embed(x)  # (B, h, w, D)
        grid = tuple(patches.shape[1:3])
        plan = SharePlan(grid, shared, self.num_prefix_tokens)
        gh, gw = plan.super_grid
        side = 2 * self.patch_size
        supers = m.patch_embed(F.avg_pool2d(x[..., :gh * side, :gw * side], 2))
        # timm adds positions (and prepends prefix tokens) additively, so the positions alone are
        # its embedding of zeros; that keeps every family's own prefix/position rules.
        base = self._pos_embed(patches.new_zeros(1, *grid, patches.shape[-1]))
        p = self.num_prefix_tokens
        pos = base[:, p:]
        pos_grid = pos.transpose(1, 2).reshape(1, -1, *grid)
        pos_supers = F.avg_pool2d(pos_grid, 2).flatten(2).transpose(1, 2)
        tokens = plan.gather(patches.flatten(1, 2), supers.flatten(1, 2)) + \
            plan.gather(pos, pos_supers)
        prefix = base[:, :p].expand(x.shape[0], -1, -1)
        return m.norm_pre(torch.cat((prefix, tokens), dim=1)), plan

    def shared_rope_table(self, plan: SharePlan, device: torch.device) -> torch.Tensor:
        """(B, 1, N - 3S, 2 * head_dim) rotary table of a shared sequence: kept patches at their
        own positions, each shared token at its superpatch centre, i.e. the same grid's table
        with timm's ``grid_offset`` raised by half a patch at the superpatch's top-left patch
        (exact for timm's DINOv3 and EVA ('cat') RoPE, whose coordinates are index + offset).
        Cached for the last plan: every block of one forward pass reuses it."""
        tracing = torch.jit.is_tracing()  # traced tables are not cached
        if not tracing and self._shared_rope is not None and self._shared_rope[0] is plan:
            return self._shared_rope[1]
        rope = self.rope
        if (not hasattr(rope, 'grid_offset') or getattr(rope, 'grid_type', 'centered')
                not in ('centered', 'index')):
            raise NotImplementedError(
                f'TimmViT: token sharing needs RoPE coordinates that follow the patch index '
                f'(timm DINOv3 or EVA "cat" RoPE); {self.name!r} has a {type(rope).__name__}.')
        if rope.training and getattr(rope, 'aug_active', False):
            raise NotImplementedError(
                f'TimmViT: token sharing with RoPE coordinate augmentation in training '
                f'({self.name!r}) is not supported; keep the trunk frozen (eval) or set the '
                'rope_*_coords model_kwargs to None.')
        grid = plan.grid

        def centres():
            centred = copy.copy(rope)  # a shallow copy: buffers shared, offset its own
            centred.grid_offset = rope.grid_offset + 0.5
            table = self._rope_embed(centred, grid, device)
            gh, gw = plan.super_grid
            return table.view(*grid, -1)[0:2 * gh:2, 0:2 * gw:2].flatten(0, 1)

        table = plan.gather(self.rope_table(grid, device)[None],
                            (centres() if tracing else
                             self._cached((grid, device, 'centres'), centres))[None])
        table = table.unsqueeze(1)  # broadcast over heads
        if not tracing:
            self._shared_rope = (plan, table)
        return table

    def _resampled_pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """``Eva._pos_embed`` without its rotary half, which would rebuild the RoPE table on every
        call (``rope_table`` caches it); also ``VisionTransformer._pos_embed`` (dynamic size)
        while tracing. A traced size cannot go through timm's resampling (its antialiased
        bicubic has no ONNX form): ``pos_resize`` computes the same resampling then."""
        if torch.jit.is_tracing():
            resample_abs_pos_embed = pos_resize.resample_abs_pos_embed
        else:
            from timm.layers import resample_abs_pos_embed
        m = self.model
        B, h, w, D = x.shape
        x = x.reshape(B, h * w, D)
        prefix = [t.expand(B, -1, -1) for t in (m.cls_token, m.reg_token) if t is not None]
        pos = None
        if m.pos_embed is not None:
            pos = resample_abs_pos_embed(
                m.pos_embed, new_size=(h, w), old_size=m.patch_embed.grid_size,
                num_prefix_tokens=0 if m.no_embed_class else m.num_prefix_tokens)
        if m.no_embed_class and pos is not None:
            x = x + pos
        x = torch.cat(prefix + [x], dim=1)
        if not m.no_embed_class and pos is not None:
            x = x + pos
        return m.pos_drop(x)

    def apply_block(self, block: nn.Module, tokens: torch.Tensor,
                    grid: Union[Tuple[int, int], SharePlan], num_extra: int = 0) -> torch.Tensor:
        if self.rope is None:
            return block(tokens)
        if isinstance(grid, SharePlan):
            table = self.shared_rope_table(grid, tokens.device)
        else:
            table = self.rope_table(grid, tokens.device)
        if num_extra:
            table = unrotated_rows(table, num_extra)
        return block(tokens, rope=table)

    def to_map(self, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        x = self.model.norm(tokens)[:, self.num_prefix_tokens:]
        return x.transpose(1, 2).reshape(x.shape[0], -1, *grid)


def unrotated_rows(table: torch.Tensor, n: int) -> torch.Tensor:
    """A timm rotary table ([sin | cos] on the last dimension, as ``apply_rot_embed_cat`` reads
    it) with ``n`` leading rows of the identity rotation (sin 0, cos 1), for tokens that have no
    position (VPT prompts, queries) placed right after the prefix tokens."""
    sin, cos = table.tensor_split(2, -1)
    shape = (*table.shape[:-2], n, sin.shape[-1])
    return torch.cat([torch.cat([sin.new_zeros(shape), sin], dim=-2),
                      torch.cat([cos.new_ones(shape), cos], dim=-2)], dim=-1)
