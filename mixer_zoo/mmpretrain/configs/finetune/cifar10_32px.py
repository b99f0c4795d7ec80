# Fine-tune a converted 32 px Mixer on CIFAR-10 with the paper's fine-tuning recipe (the schedule file:
# momentum SGD 0.9, total batch 512, linear warm-up then cosine decay, clipping at global norm 1, no weight
# decay), at the native 32x32 with the crop-and-flip augmentation of ../_base_/datasets/cifar10_32.py. The start is
# a converted folder (model.safetensors in timm layout, e.g. `mixer-zoo convert epoch_9.pth --out DIR`):
#   python -m mixer_zoo.cli train finetune/cifar10_32px.py --load-from local-dir:DIR --threads 2 \
#       --data-root PATH   (the folder holding cifar-10-batches-py/; every dataloader)
# --load-from takes the whole classifier and must match it exactly (shape below, 10 classes); for a checkpoint
# with another head take the backbone only: model.backbone.init_cfg=dict(type='Pretrained',
# checkpoint='local-dir:DIR', prefix='backbone.'). The shape must be the checkpoint's (its config.json model_args).
# Sized for a CPU and 10,000 images: 300 steps (about 15 epochs) with 30 warm-up steps instead of the
# recipe's 10,000 and 500, which are for 50,000 images at 224 px.
_base_ = [
    '../_base_/models/mixer_cifar32.py',
    '../_base_/datasets/cifar10_32.py',
    '../_base_/schedules/finetune_sgd_bs512.py',
    '../_base_/default_runtime.py',
]

train_dataloader = dict(batch_size=512)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=30, end=300),
]
train_cfg = dict(max_iters=300, val_interval=100)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=100))
