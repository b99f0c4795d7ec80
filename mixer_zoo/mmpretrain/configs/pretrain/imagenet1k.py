# Mixer-B/16 pre-trained on ImageNet-1k as in the MLP-Mixer paper (schedule: ../_base_/schedules/
# paper_adam_bs4096.py): batch 4096 = 32 processes x 128 here, 224x224 inception crops and flips,
# plus the paper's ImageNet regularisers. The paper sets RandAugment, mixup, dropout and stochastic depth
# per model size in its appendix table; the values below are our choices for B/16 (RandAugment 2 ops at
# timm's magnitude 9, mixup 0.5, stochastic depth 0.1, no dropout) -- check them against that table.
_base_ = [
    '../_base_/models/mixer_zoo.py',
    '../_base_/datasets/imagenet_eval.py',
    '../_base_/schedules/paper_adam_bs4096.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(arch='mixer_b16_zoo', act_layer='gelu', drop_path_rate=0.1),
    head=dict(num_classes=1000, in_channels=768, loss=dict(type='CrossEntropyLoss', use_soft=True)),
    train_cfg=dict(augments=dict(type='Mixup', alpha=0.5)),
)

default_hooks = dict(checkpoint=dict(by_epoch=False, interval=3_130, max_keep_ckpts=3))

dataset_type = 'ImageNet'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10, magnitude_level=9,
         magnitude_std=0.5, hparams=dict(pad_val=[128, 128, 128], interpolation='bicubic')),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    dataset=dict(type=dataset_type, data_root='data/imagenet', split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
# Validation as in ../_base_/datasets/imagenet_eval.py, in the training run's batches.
val_dataloader = dict(batch_size=128, num_workers=8)
test_dataloader = val_dataloader
