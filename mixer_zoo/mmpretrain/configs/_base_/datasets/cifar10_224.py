# CIFAR-10 from the standard cifar-10-batches-py layout, upsampled to 224 as in the Mixer fine-tunes
# (vision_transformer's input pipeline: resize, random crop, horizontal flip for training; resize to the
# crop size for testing). data_root is the folder that holds cifar-10-batches-py/.
dataset_type = 'ZooCIFAR10'
data_root = 'data/cifar10'

train_pipeline = [
    # 256 before the 224 crop is our choice (vision_transformer resizes to 448 before its 384 crop).
    dict(type='Resize', scale=(256, 256), interpolation='bilinear'),
    dict(type='RandomCrop', crop_size=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='Resize', scale=(224, 224), interpolation='bilinear'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=64,  # per process: 8 processes x 64 = the recipe's total batch of 512
    num_workers=4,
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=4,
    dataset=dict(type=dataset_type, data_root=data_root, split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
