# Fine-tune at 64x64 a 32 px CIFAR-10 Mixer expanded to 64 px, as the paper fine-tunes at a higher resolution
# (Sec. 3, Supplementary C): the patch size stays 4, so the grid grows from 8x8 to 16x16 tokens and every
# token-mixing MLP is expanded block-diagonally from 64 to 256 hidden units (4 copies, one per 32x32 tile):
#   mixer-zoo convert c10_32px --img-size 64 --out c10_64px     # a converted 32 px folder -> the 64 px start
#   mixer-zoo train finetune/cifar10_64px.py --load-from local-dir:c10_64px --threads 2 --cfg-options $ROOTS
# Images are upsampled 32 -> 64 bilinearly, as vision_transformer's input pipeline resizes (tf.image.resize,
# half-pixel centres; here cv2's INTER_LINEAR on uint8, the same sampling, rounded to integers), then get the 32 px
# augmentation at twice the size (random crop with 8 px padding, horizontal flip).
# The paper's fine-tuning recipe of ./cifar10_32px.py (momentum SGD 0.9, lr 0.03, linear warm-up + cosine,
# clipping at global norm 1, no weight decay), sized for a 2-core CPU: batch 128 instead of 512 (four times
# the steps for the same images) and 160 steps, about two epochs of the 10,000 real training images, with
# 10 warm-up steps; validation every 40 steps (benchmarks/resolution_finetune.py records the curve).
_base_ = ['./cifar10_32px.py']

img_size = 64
model = dict(backbone=dict(arch=dict(tokens_mlp_dim=256), img_size=img_size))

train_pipeline = [
    dict(type='Resize', scale=(img_size, img_size), interpolation='bilinear'),
    dict(type='RandomCrop', crop_size=img_size, padding=8),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='Resize', scale=(img_size, img_size), interpolation='bilinear'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=250, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=10, end=160),
]
train_cfg = dict(max_iters=160, val_interval=40)
default_hooks = dict(
    # validation metrics logged at the iteration they follow (mmengine logs them by epoch, 0 in an iteration loop)
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=160, max_keep_ckpts=1),
)
