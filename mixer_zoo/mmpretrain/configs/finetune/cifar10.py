# Fine-tune an ImageNet tag on CIFAR-10 with vision_transformer's recipe (see the schedule file):
#   python -m mixer_zoo.train mixer_zoo/mmpretrain/configs/finetune/cifar10.py \
#       --data-root PATH   (the folder holding cifar-10-batches-py/; every dataloader)
# From another tag: model.backbone.arch=mixer_l16_zoo.goog_in21k model.head.in_channels=1024 (its width).
# The ImageNet-21k tags are the usual starting point (the paper's transfer results start from them).
_base_ = [
    '../_base_/models/mixer_zoo.py',
    '../_base_/datasets/cifar10_224.py',
    '../_base_/schedules/finetune_sgd_bs512.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(arch='mixer_b16_zoo.goog_in21k', pretrained=True),  # weights via zoo://, prefix backbone.
    head=dict(
        num_classes=10,
        in_channels=768,
        topk=(1, ),
        # vision_transformer starts the new head at zero.
        init_cfg=dict(type='Constant', layer='Linear', val=0.0),
    ),
    data_preprocessor=dict(num_classes=10, to_rgb=False),  # ZooCIFAR10 yields RGB arrays
)

default_hooks = dict(checkpoint=dict(by_epoch=False, interval=1_000))
