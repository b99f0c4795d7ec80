"""The MindSpore side of the proof, run by an interpreter that has ``mindspore`` (never mixer-zoo's own venv):
a MindSpore Mixer with the cell names of MindSpore's release (mindspore-courses/applications mlpMixer: mindvision's
BaseClassifier(backbone, head=DenseHead), PatchEmbedding.conv, FeedForward dense1/dense2, MindSpore's default
nn.GELU and nn.LayerNorm), random weights saved with MindSpore's own ``save_checkpoint``, and its logits on the
images given, preprocessed by the release's transforms (``Resize(size)`` then ``Normalize`` on 0-255 pixels,
``HWC2CHW``).

    PYTHON_WITH_MINDSPORE tests/mindspore_reference.py --images IMAGES.npy --out DIR [--img-size 32 --patch 4 ...]

writes DIR/model.ckpt, DIR/logits.npy (float32), DIR/inputs.npy (the preprocessed float32 batch, NCHW) and
DIR/facts.json (MindSpore's version and the GELU/LayerNorm settings it used).
"""
import argparse
import json
from pathlib import Path

import numpy as np

MEAN = (126.1, 123.7, 114.6)
STD = (62.9, 61.9, 66.7)


def build(ms, nn, ops, img_size, patch, width, tokens_hidden, channels_hidden, depth, num_classes):
    """The release's cell tree with its parameter names; every layer with MindSpore's default arguments."""

    class FeedForward(nn.Cell):
        def __init__(self, features, hidden):
            super().__init__()
            self.dense1 = nn.Dense(features, hidden)
            self.activation = nn.GELU()
            self.dense2 = nn.Dense(hidden, features)

        def construct(self, x):
            return self.dense2(self.activation(self.dense1(x)))

    class TokenMixer(nn.Cell):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm((width,))
            self.token_mixing_mlp = FeedForward((img_size // patch) ** 2, tokens_hidden)

        def construct(self, x):
            return ops.transpose(self.token_mixing_mlp(ops.transpose(self.norm(x), (0, 2, 1))), (0, 2, 1))

    class ChannelMixer(nn.Cell):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm((width,))
            self.channel_mixing_mlp = FeedForward(width, channels_hidden)

        def construct(self, x):
            return self.channel_mixing_mlp(self.norm(x))

    class MixerBlock(nn.Cell):
        def __init__(self):
            super().__init__()
            self.token_mixer = TokenMixer()
            self.channel_mixer = ChannelMixer()

        def construct(self, x):
            x = x + self.token_mixer(x)
            return x + self.channel_mixer(x)

    class DeepMixerBlock(nn.Cell):
        def __init__(self):
            super().__init__()
            self.layers = nn.SequentialCell([MixerBlock() for _ in range(depth)])

        def construct(self, x):
            return self.layers(x)

    class PatchEmbedding(nn.Cell):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, width, kernel_size=patch, stride=patch, has_bias=True)

        def construct(self, x):
            x = self.conv(x)
            return ops.transpose(ops.reshape(x, (x.shape[0], x.shape[1], -1)), (0, 2, 1))

    class Backbone(nn.Cell):
        def __init__(self):
            super().__init__()
            self.patch_embedding = PatchEmbedding()
            self.mixer_blocks = DeepMixerBlock()
            self.norm = nn.LayerNorm((width,))

        def construct(self, x):
            return ops.mean(self.norm(self.mixer_blocks(self.patch_embedding(x))), 1)

    class DenseHead(nn.Cell):
        def __init__(self):
            super().__init__()
            self.dense = nn.Dense(width, num_classes)

        def construct(self, x):
            return self.dense(x)

    class Classifier(nn.Cell):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()
            self.head = DenseHead()

        def construct(self, x):
            return self.head(self.backbone(x))

    return Classifier()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="uint8 (N, 32, 32, 3) RGB images, .npy")
    parser.add_argument("--out", required=True)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--tokens-hidden", type=int, default=8)
    parser.add_argument("--channels-hidden", type=int, default=32)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crc-check", action="store_true", help="save_checkpoint(..., crc_check=True)")
    args = parser.parse_args()

    import mindspore as ms
    import mindspore.dataset.vision as vision
    from mindspore import nn, ops

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU") if hasattr(ms, "set_device") else ms.set_context(device_target="CPU")
    net = build(ms, nn, ops, args.img_size, args.patch, args.width, args.tokens_hidden, args.channels_hidden, args.depth, 10)
    rng = np.random.default_rng(args.seed)
    for param in net.get_parameters():  # LN scales near 1, everything else small noise: a swap shows in the logits
        noise = rng.standard_normal(param.shape).astype(np.float32)
        value = 1.0 + 0.1 * noise if param.name.endswith("gamma") else 0.1 * noise
        param.set_data(ms.Tensor(value, ms.float32))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ms.save_checkpoint(net, str(out / "model.ckpt"), crc_check=args.crc_check)

    images = np.load(args.images, allow_pickle=False)
    resize, normalize, to_chw = vision.Resize(args.img_size), vision.Normalize(MEAN, STD), vision.HWC2CHW()
    inputs = np.stack([to_chw(normalize(resize(image))) for image in images]).astype(np.float32)
    net.set_train(False)
    logits = net(ms.Tensor(inputs)).asnumpy()
    np.save(out / "inputs.npy", inputs)
    np.save(out / "logits.npy", logits.astype(np.float32))
    gelu, norm = nn.GELU(), nn.LayerNorm((4,))
    facts = dict(mindspore=ms.__version__, gelu_approximate=bool(getattr(gelu, "approximate", True)),
                 layer_norm_epsilon=float(getattr(norm, "epsilon", getattr(norm, "eps", float("nan")))),
                 img_size=args.img_size, patch=args.patch, seed=args.seed, crc_check=args.crc_check)
    (out / "facts.json").write_text(json.dumps(facts, indent=2) + "\n")


if __name__ == "__main__":
    main()
