# Runtime shared by every config: registers mmseg_custom, logging, checkpoints, seed.
custom_imports = dict(imports=['mmseg_custom'], allow_failed_imports=False)
default_scope = 'mmseg'
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='SegTTAModel')
# Label values that name no class stop the run, naming the file (any data set).
custom_hooks = [dict(type='SegLabelCheckHook')]
randomness = dict(seed=2023)
