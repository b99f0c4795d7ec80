# A small Mixer for CIFAR-10 at its native 32x32, sized for a CPU: patch 4 (an 8x8 grid of 64 tokens), 4 blocks,
# width 128, token MLP 64, channel MLP 256 -- 0.3M parameters, about 21M multiply-adds per image.
# The head's loss: cross-entropy with label smoothing 0.1.
_base_ = ['./mixer_zoo.py']

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, patch_size=4, num_blocks=4, embed_dim=128, tokens_mlp_dim=64,
                  channels_mlp_dim=256),
        img_size=32, act_layer='gelu'),
    head=dict(num_classes=10, in_channels=128, topk=(1, 5),
              loss=dict(_delete_=True, type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    data_preprocessor=dict(num_classes=10, to_rgb=False),  # ZooCIFAR10 yields RGB arrays
)
