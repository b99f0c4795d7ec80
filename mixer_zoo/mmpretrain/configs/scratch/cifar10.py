# CIFAR-10 from scratch with the paper's pre-training setup (Adam, 10k-step linear warm-up, linear decay,
# weight decay 0.1, clipping at global norm 1, RandAugment, mixup, stochastic depth): the paper trains
# from scratch only on ImageNet, so everything sized to CIFAR-10 below is our choice:
#   - Mixer-S/16 on images upsampled to 224 (same input as the fine-tuning config, so results compare);
#   - total batch 512 (98 steps per epoch), 300 epochs = 29,400 steps, warm-up 10 epochs (980 steps)
#     rather than 10k steps, which would be a third of the run;
#   - RandAugment 2 ops at timm's magnitude 9 (+-0.5), mixup alpha 0.5, stochastic depth 0.1, no dropout.
_base_ = [
    '../_base_/models/mixer_zoo.py',
    '../_base_/datasets/cifar10_224.py',
    '../_base_/schedules/paper_adam_bs4096.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(arch='mixer_s16_zoo', act_layer='gelu', drop_path_rate=0.1),
    head=dict(num_classes=10, in_channels=512, topk=(1, ), loss=dict(type='CrossEntropyLoss', use_soft=True)),
    data_preprocessor=dict(num_classes=10, to_rgb=False),
    train_cfg=dict(augments=dict(type='Mixup', alpha=0.5)),
)

train_pipeline = [
    dict(type='Resize', scale=(256, 256), interpolation='bilinear'),
    dict(type='RandomCrop', crop_size=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10, magnitude_level=9,
         magnitude_std=0.5, hparams=dict(pad_val=[125, 123, 114], interpolation='bilinear')),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))  # 8 processes x 64 = 512

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=980),
    dict(type='LinearLR', start_factor=1.0, end_factor=0.0, by_epoch=False, begin=980, end=29_400),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=29_400, val_interval=980)
auto_scale_lr = dict(base_batch_size=512)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=980))
