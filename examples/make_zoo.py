"""Build the model zoo in models/: six fully-int8 .tflite files plus a fixed int8 input set for each.

Run by a developer (needs the `zoo` extra, i.e. TensorFlow); the outputs are committed so tests and
benchmarks never import TensorFlow:

    .venv/bin/python examples/make_zoo.py [--only NAME ...]

Everything is seeded, so a rerun on the same TensorFlow version rewrites the same bytes.
The untrained nets get random weights and "data-dependent" BatchNorm statistics (see `calibrate_bn`)
so that every layer sees healthy activations, which makes the bit-exact tests meaningful:
a net whose activations are all clamped to one value would pass with a broken kernel.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # reuse the LiteRT BUILTIN_REF runner of the test suite

from tinymem.model import load_tflite  # noqa: E402
from tinymem.model.tflite import parse_tflite  # noqa: E402

MODELS = ROOT / "models"
SEED = 0
N_REPRESENTATIVE = 32  # enough for calibration; kept small because the build box is shared


def synthetic_images(rng, n, shape, lo=-1.0, hi=1.0):
    """Blocky low-frequency noise plus fine noise: image-like statistics without any download."""
    h, w, c = shape
    coarse = rng.uniform(lo, hi, (n, -(-h // 8), -(-w // 8), c))
    img = coarse.repeat(8, axis=1).repeat(8, axis=2)[:, :h, :w] + rng.normal(0, 0.2 * (hi - lo) / 2, (n, h, w, c))
    return np.clip(img, lo, hi).astype(np.float32)


def calibrate_bn(model, x, rng):
    """Give BatchNorm layers random affine parameters and the batch statistics of `x`.

    With momentum 0 one training-mode pass copies each layer's batch mean/variance into its moving
    statistics, so in inference mode every BN normalizes its input and activations neither explode
    nor die through 50 layers; the random gamma/beta make the folded conv weights non-trivial.
    """
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = 0.0
            gamma, beta = layer.gamma, layer.beta
            gamma.assign(rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32))
            beta.assign(rng.normal(0.2, 0.3, beta.shape).astype(np.float32))
    model(x, training=True)


def spread_logits(model, x, target_std=3.0):
    """Rescale the classifier so random-weight logits have a real spread.

    Otherwise the int8 softmax of an untrained net is nearly uniform and one-LSB output steps could
    hide an upstream kernel error from the bit-exact tests.
    """
    head = model.layers[-1]
    softmax, head.activation = head.activation, keras.activations.linear
    k = target_std / float(np.std(model(x, training=False)))
    head.activation = softmax
    head.kernel.assign(head.kernel * k)
    head.bias.assign(head.bias * k)


def convert(model, representative: np.ndarray, int8_io: bool = True) -> bytes:
    # A fixed batch of 1: with a dynamic batch Flatten becomes SHAPE/STRIDED_SLICE/PACK/RESHAPE and
    # the converter cannot fold SPACE_TO_BATCH_ND/BATCH_TO_SPACE_ND back into a dilated conv.
    inp = keras.Input(model.input_shape[1:], batch_size=1)
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, model(inp)))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([s[None]] for s in representative)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:  # otherwise the converter's default: float32 I/O around QUANTIZE/DEQUANTIZE
        conv.inference_input_type = conv.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # SavedModel export chatter
        warnings.simplefilter("ignore")
        return conv.convert()


def quantize_like_input(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    g = parse_tflite(model_bytes)
    scale, zp = g.t(g.inputs[0]).quant.scalar()
    return np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)


# --- architectures -----------------------------------------------------------------------------

def conv_bn(x, filters, kernel, strides=1, act="relu6"):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation(act)(x) if act else x


def dw_bn(x, kernel, strides=1, act="relu6"):
    x = layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation(act)(x)


def mobilenetv2(alpha, size, classes):
    return keras.applications.MobileNetV2(alpha=alpha, input_shape=(size, size, 3), weights=None, classes=classes)


def mcunet_like():
    """MCUNet-style searched backbone: mixed 3/5/7 depthwise kernels and expansion ratios 3-6."""
    # (expansion, kernel, out channels, stride); a residual add wherever shape allows it.
    blocks = [(1, 3, 8, 1),
              (3, 7, 16, 2), (3, 3, 16, 1),
              (6, 5, 24, 2), (4, 3, 24, 1), (5, 7, 24, 1),
              (5, 3, 40, 2), (4, 5, 40, 1),
              (6, 7, 48, 1), (3, 3, 48, 1),
              (6, 5, 96, 2), (4, 3, 96, 1),
              (6, 3, 160, 1)]
    inp = keras.Input((96, 96, 3))
    x = conv_bn(inp, 16, 3, strides=2)
    for e, k, c, s in blocks:
        y = conv_bn(x, x.shape[-1] * e, 1) if e > 1 else x
        y = dw_bn(y, k, s)
        y = conv_bn(y, c, 1, act=None)  # linear bottleneck
        x = layers.Add()([x, y]) if s == 1 and x.shape[-1] == c else y
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax")(x), name="mcunet_like")


def dscnn_kws():
    """DS-CNN (Hello Edge, small): MFCC 49x10 -> 12 keyword classes."""
    inp = keras.Input((49, 10, 1))
    x = conv_bn(inp, 64, (10, 4), strides=2, act="relu")
    for _ in range(4):
        x = dw_bn(x, 3, act="relu")
        x = conv_bn(x, 64, 1, act="relu")
    x = layers.AveragePooling2D(pool_size=x.shape[1:3])(x)
    x = layers.Flatten()(x)
    return keras.Model(inp, layers.Dense(12, activation="softmax")(x), name="dscnn_kws")


def digits_cnn():
    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax")(x), name="digits_cnn")


def awkward():
    """Every shape and option that tends to break a hand-written kernel, on a 17x23 input."""
    inp = keras.Input((17, 23, 3))
    # Even kernels at stride 2 with SAME padding pad asymmetrically: 1/2 rows, 0/1 columns -> 9x12.
    a = layers.Conv2D(8, (4, 2), strides=2, padding="same")(inp)
    a = layers.Activation("hard_silu")(a)  # x * relu6(x + 3) / 6 -> HARD_SWISH
    b1 = layers.DepthwiseConv2D(3, dilation_rate=2, depth_multiplier=2, padding="same", activation="relu6")(a)
    # Padding more at the top/left than SAME would: the converter cannot fuse it into the conv.
    b2 = layers.ReLU()(layers.ZeroPadding2D(((2, 1), (1, 0)))(a))  # 12x13; PAD has no fused RELU
    b2 = layers.Conv2D(16, (4, 2), activation="sigmoid")(b2)  # valid -> 9x12, LOGISTIC
    b3 = layers.Conv2D(16, 1)(a)
    x = layers.Add()([layers.Multiply()([b1, b2]), b3])
    x = layers.Concatenate()([x, b1])  # 9x12x32
    p1 = layers.AveragePooling2D(3, strides=2, padding="same")(x)  # 5x6
    p2 = layers.MaxPooling2D((3, 2), strides=2, padding="same")(x)  # 5x6
    x = layers.Concatenate()([p1, p2])
    x = layers.Conv2D(24, 3, strides=2, padding="same", activation="hard_silu")(x)  # 3x3, pads 1/1 and 0/1
    x = layers.ReLU(6.0)(layers.GlobalAveragePooling2D()(x))  # MEAN has no fused activation: RELU6
    return keras.Model(inp, layers.Dense(10, activation="softmax")(x), name="awkward")


# --- the zoo -----------------------------------------------------------------------------------

def untrained(build, shape, lo=-1.0, hi=1.0):
    """Recipe for a net with random weights: images in [lo, hi] for BN statistics and calibration."""
    def make(rng):
        model = build()
        x = synthetic_images(rng, 64, shape, lo, hi)
        calibrate_bn(model, x, rng)
        spread_logits(model, x)
        rep = synthetic_images(rng, N_REPRESENTATIVE, shape, lo, hi)
        return model, rep, synthetic_images(rng, 4, shape, lo, hi), {}
    return make


def trained_digits(rng):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from reference import litert_run

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.25, random_state=SEED, stratify=d.target)
    model = digits_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xtr, ytr, epochs=12, batch_size=32, verbose=0)
    float_acc = model.evaluate(xte, yte, verbose=0)[1]

    def check(model_bytes):
        q = quantize_like_input(model_bytes, xte)
        (probs,) = litert_run(model_bytes, q)
        return {"float test accuracy": float_acc, "int8 test accuracy": float((probs.argmax(-1) == yte).mean()),
                "test samples": len(yte)}
    return model, xtr[rng.permutation(len(xtr))[:N_REPRESENTATIVE]], xte[:4], {"check": check}


ZOO = {
    "mobilenetv2_035_96": untrained(lambda: mobilenetv2(0.35, 96, 10), (96, 96, 3)),
    "mobilenetv2_050_144": untrained(lambda: mobilenetv2(0.5, 144, 2), (144, 144, 3)),
    "mcunet_like": untrained(mcunet_like, (96, 96, 3)),
    "dscnn_kws": untrained(dscnn_kws, (49, 10, 1), lo=-3.0, hi=3.0),  # MFCC-like range
    "digits_cnn": trained_digits,
    "awkward": untrained(awkward, (17, 23, 3)),
}
# Same recipe, converted with the converter's default float32 input/output (QUANTIZE/DEQUANTIZE at
# the boundary), as most users will hand it to us. Its .inputs.npy holds float32 samples.
FLOAT_IO = {"digits_cnn_float_io": "digits_cnn"}


def describe(path: Path) -> tuple[Counter, list[str]]:
    """Op histogram of the model, and every non-integer tensor an op touches (should be none)."""
    g = load_tflite(path)
    ops = Counter(op.kind for op in g.ops)
    floats = sorted({g.t(t).describe() for op in g.ops for t in op.inputs + op.outputs
                     if t >= 0 and g.t(t).dtype not in ("int8", "int32")})
    return ops, floats


def build(name: str) -> None:
    # Fresh layer-name counters (names land in the .tflite) and seeds (Python, NumPy, TF: weight
    # init, training): each model's bytes do not depend on which models were built before it.
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    model, rep, sample, extra = ZOO[FLOAT_IO.get(name, name)](rng)
    model_bytes = convert(model, rep, int8_io=name not in FLOAT_IO)
    path = MODELS / f"{name}.tflite"
    path.write_bytes(model_bytes)
    np.save(MODELS / f"{name}.inputs.npy",
            sample.astype(np.float32) if name in FLOAT_IO else quantize_like_input(model_bytes, sample))
    ops, floats = describe(path)
    if floats:
        raise SystemExit(f"{name}: not fully int8, float tensors left: {floats}")
    print(f"{name}: {len(model_bytes)} bytes, {sum(ops.values())} ops: "
          + ", ".join(f"{k}x{v}" for k, v in sorted(ops.items())))
    if "check" in extra and name not in FLOAT_IO:
        for k, v in extra["check"](model_bytes).items():
            print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(ZOO) + sorted(FLOAT_IO), help="build only these models")
    args = ap.parse_args()
    MODELS.mkdir(exist_ok=True)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    for name in args.only or [*ZOO, *FLOAT_IO]:
        build(name)


if __name__ == "__main__":
    main()
