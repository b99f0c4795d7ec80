# CIFAR-10 evaluation of mixer_b32_zoo.gsam_in1k_ft_cifar10 (test split; data_root holds cifar-10-batches-py/).
# Generated from weights_manifest.json by `python -m mixer_zoo.mmpretrain --write`: do not edit.
_base_ = ['../_base_/models/mixer_zoo.py', '../_base_/datasets/cifar10_224.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(arch='mixer_b32_zoo.gsam_in1k_ft_cifar10', img_size=224),  # the tag sets the GELU flavour (gelu_tanh) and LN eps
    head=dict(num_classes=10, in_channels=768),
    data_preprocessor=dict(num_classes=10, mean=[126.1, 123.7, 114.6], std=[62.9, 61.9, 66.7], to_rgb=False),
)

val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

load_from = 'zoo://mixer_b32_zoo.gsam_in1k_ft_cifar10'
