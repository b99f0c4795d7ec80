# CIFAR-10 at its native 32x32 (no upsampling), the usual CIFAR augmentation: random 32x32 crop of the image
# zero-padded by 4 pixels on each side, horizontal flip. ZooCIFAR10 decodes every image once, into memory, so
# the per-image pipeline is a crop and a flip: one loader process (num_workers=0) keeps up with the model.
# data_root is the folder that holds cifar-10-batches-py/.
dataset_type = 'ZooCIFAR10'
data_root = 'data/cifar10'

train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=128,
    num_workers=0,
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=500,
    num_workers=0,
    dataset=dict(type=dataset_type, data_root=data_root, split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
