# The fine-tuning recipe of google-research/vision_transformer (vit_jax/configs/common.py and
# mixer_base16_cifar10.py), which the Mixer paper's transfer results and later reproductions use:
#   momentum SGD (0.9), total batch 512, base lr 0.03, linear warm-up over 500 steps then cosine decay
#   to 0, gradient clipping at global norm 1, no weight decay, 10,000 steps for CIFAR-10.
# Differences we chose: momentum kept in float32 (vit_jax stores it in bfloat16); no gradient
# accumulation by default (vit_jax accumulates 8 micro-batches: set optim_wrapper.accumulative_counts).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.03, momentum=0.9, weight_decay=0.0),
    clip_grad=dict(max_norm=1.0, norm_type=2),
)
param_scheduler = [
    # vit_jax warms up from 0; LinearLR needs a positive start factor, so it starts at lr / 1000.
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=500, end=10_000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=10_000, val_interval=1_000)
# The lr above is for a total batch of 512; `--auto-scale-lr` rescales it linearly for another total.
auto_scale_lr = dict(base_batch_size=512, enable=False)

log_processor = dict(by_epoch=False)
