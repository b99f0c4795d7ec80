# The small Mixer of ../_base_/models/mixer_cifar32.py trained from scratch on CIFAR-10 at 32x32 on a CPU. The
# paper trains from scratch only on ImageNet; this recipe is ours, tuned on the 10,000 real training images of
# ../shared/data/cifar10-real (benchmarks/cifar10_scratch.py records the curve):
#   - AdamW, lr 2e-3 for a batch of 128, weight decay 0.05, gradient clipping at global norm 1 (as the paper);
#   - linear warm-up over the first epoch, then cosine decay to 0 at the last epoch;
#   - label smoothing 0.1; random crop (padding 4) and horizontal flip; no mixup, no stochastic depth:
#     in a few epochs on 10k images they cost more than they give.
#   python -m mixer_zoo.cli train scratch/cifar10_32px.py --threads 2 \
#       --data-root PATH   (the folder holding cifar-10-batches-py/; every dataloader)
_base_ = [
    '../_base_/models/mixer_cifar32.py',
    '../_base_/datasets/cifar10_32.py',
    '../_base_/default_runtime.py',
]

max_epochs = 8
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=1.0, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=1, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
auto_scale_lr = dict(base_batch_size=128, enable=False)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    # the last epoch's weights only: the val set is the test set, so no epoch is picked by it
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1),
)
