# default_runtime.py plus what every EoMT and ViT-Split-EoMT experiment adds: the eomt module
# (custom_imports) and the annealing of the queries' masked attention. Its windows, one per query
# block, are the official EoMT-L ADE20K 40k ones; a config with other blocks or iterations
# restates the list.
_base_ = ['./default_runtime.py']
custom_imports = dict(imports=['mmseg_custom', 'mmseg_custom.models.eomt'],
                      allow_failed_imports=False)
custom_hooks = [
    dict(type='SegLabelCheckHook'),
    dict(type='EoMTMaskAnnealingHook', start_iters=[6520, 13040, 19560, 26080],
         end_iters=[13040, 19560, 26080, 32600]),
]
