# ImageNet evaluation of mixer_s32_zoo.gsam_in1k.
# Generated from weights_manifest.json by `python -m mixer_zoo.mmpretrain --write`: do not edit.
_base_ = ['../_base_/models/mixer_zoo.py', '../_base_/datasets/imagenet_eval.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(arch='mixer_s32_zoo.gsam_in1k', img_size=224),  # the tag sets the GELU flavour (gelu_tanh)
    head=dict(num_classes=1000, in_channels=512),
    data_preprocessor=dict(num_classes=1000, mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], to_rgb=True),
)

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(type='ImageNet', data_root='data/imagenet', split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader

load_from = 'zoo://mixer_s32_zoo.gsam_in1k'
