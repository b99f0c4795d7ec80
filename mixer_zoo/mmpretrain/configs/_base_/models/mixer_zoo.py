# An ImageClassifier around the MixerZoo backbone: final LayerNorm, token average, linear head (as timm).
# The head's in_channels must equal the architecture's width (S: 512, B: 768, L: 1024, H: 1280).
model = dict(
    type='ImageClassifier',
    backbone=dict(type='MixerZoo', arch='mixer_b16_zoo', img_size=224, out_type='avg_featmap'),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5),
    ),
    # Google's checkpoints see pixels in [-1, 1]: (x - 127.5) / 127.5, RGB.
    data_preprocessor=dict(num_classes=1000, mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], to_rgb=True),
)
