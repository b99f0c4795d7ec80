# Pre-training as the MLP-Mixer paper states it (Tolstikhin et al., arXiv:2105.01601, Sec. 3 "Experiments
# setup" and the appendix on pre-training): Adam with beta1 0.9, beta2 0.999, linear learning-rate warm-up
# over 10k steps then linear decay, batch size 4096, weight decay, gradient clipping at global norm 1.
# Where we chose:
#   - AdamW (decoupled weight decay scaled by the lr, as flax.optim.Adam's weight_decay), wd 0.1 on every
#     parameter, lr 1e-3: check the per-model values in the paper's appendix table before a full run;
#   - 300 epochs of ImageNet-1k (1,281,167 images / 4096 = 313 steps per epoch -> 93,900 steps);
#   - linear decay to 0 at the end of training.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.1),
    clip_grad=dict(max_norm=1.0, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=10_000),
    dict(type='LinearLR', start_factor=1.0, end_factor=0.0, by_epoch=False, begin=10_000, end=93_900),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=93_900, val_interval=3_130)
auto_scale_lr = dict(base_batch_size=4096, enable=False)

log_processor = dict(by_epoch=False)
