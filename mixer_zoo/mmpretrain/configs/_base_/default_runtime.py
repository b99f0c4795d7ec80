# Runtime shared by every mixer-zoo config: mmpretrain's registries plus ours (MixerZoo, zoo://, ZooCIFAR10).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mixer_zoo.mmpretrain'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),  # vision_transformer logs progress every 10 steps
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # nccl on GPUs; mixer_zoo.train switches to gloo when there is no CUDA device.
    dist_cfg=dict(backend='nccl'),
)

# mmengine's default validation and test loops (the dataloaders and evaluators come with the dataset).
val_cfg = dict()
test_cfg = dict()

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)

# A checkpoint (load_from, resume) must fill the model exactly: mmengine alone warns and goes on half-loaded.
custom_hooks = [dict(type='ExactCheckpointHook')]
