"""Build the on-device transfer-learning task in models/: a small int8 MobileNet-like net pretrained on
digits 0-4, the 5-9 fine-tuning data, and the host float baselines.

Run by a developer (needs the `zoo` extra, i.e. TensorFlow); the outputs are committed, so tests,
`make transfer` and `tinymem train` never import TensorFlow:

    .venv/bin/python examples/make_transfer.py

Writes
  transfer_digits.tflite            fully int8 (int8 input and output), 10-way head, pretrained on 0-4 only
  transfer_digits.train.npz         fine-tuning train split of digits 5-9: x int8 [N, 8, 8, 1], y int64 5..9
  transfer_digits.test.npz          fine-tuning test split of digits 5-9 (same format)
  transfer_digits.pretest.npz       the pretraining test split of digits 0-4 (same format)
  transfer_digits.json              the settings below and the accuracies they gave

Data: scikit-learn's load_digits (1,797 8x8 images, shipped with scikit-learn: no download).
Baselines on the 5-9 test split: the int8 model before fine-tuning (LiteRT BUILTIN_REF), and float
fine-tuning in Keras of all layers and of the last layer only: plain SGD, batch 1, no momentum,
constant learning rate, FT_EPOCHS epochs over the train split in the same seeded per-epoch orders
a board run uses (tinymem/train/run.py: numpy default_rng(seed).permutation each epoch). That is the
optimizer the board runs (docs/training.md: with QAS its update is float SGD on the real weights),
so the float numbers are what the board's sparse update is held to at the same epochs and rate.
Everything is seeded: a rerun on the same TensorFlow version rewrites the same bytes.

The sparse-update plan and its contribution table (transfer_digits.plan.json, .gains.json) come
from tinymem itself, without TensorFlow, after this script:

    tinymem train-plan models/transfer_digits.tflite --data models/transfer_digits.train.npz \
        --sram 256KiB --lr 0.01 --epochs 2 --gains models/transfer_digits.gains.json \
        -o models/transfer_digits.plan.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the LiteRT BUILTIN_REF runner of the test suite
sys.path.insert(0, str(ROOT / "examples"))

from make_zoo import convert, quantize_like_input  # noqa: E402
from reference import litert_run  # noqa: E402

MODELS = ROOT / "models"
NAME = "transfer_digits"
SEED = 0
PRE_CLASSES = (0, 1, 2, 3, 4)  # pretraining labels; the head still has 10 outputs
PRE_EPOCHS, PRE_LR, PRE_BATCH = 40, 3e-3, 32
# Label smoothing spreads a little probability over all 10 outputs, so the 5-9 logits of the
# pretrained head sit near the 0-4 ones instead of tens of units below them: fine-tuning then moves
# them with ordinary learning rates, and the int8 logits keep a useful scale.
PRE_LABEL_SMOOTHING = 0.1
FT_TRAIN = 300  # fine-tuning train split: 300 of the 5-9 digits (stratified, ~60 a class); the rest is the test split
FT_EPOCHS, FT_LR = 8, 0.01  # the float fine-tuning baselines (and `make transfer`'s defaults)
ORDER_SEEDS = (0, 1, 2)  # SEED's orders are the headline (the board run's); the others show the spread
STEM = 16
# (expansion, out channels, stride) of the inverted-residual blocks; a residual ADD where shapes allow.
BLOCKS = [(3, 16, 1), (3, 24, 2), (3, 24, 1), (3, 32, 2)]
HEAD = 96  # 1x1 conv before the pool (MobileNetV2's last conv): pooled features wide enough to transfer


def build_logits_model() -> keras.Model:
    """8x8x1 -> conv stem -> inverted residuals (ReLU6, linear bottleneck) -> 1x1 head conv -> global
    average pool -> dense logits. No BatchNorm: with batch-1 SGD there are no batch statistics to
    fine-tune, and the float model is then exactly the graph the int8 model quantizes."""
    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(STEM, 3, padding="same", activation="relu6")(inp)
    for e, c, s in BLOCKS:
        y = layers.Conv2D(x.shape[-1] * e, 1, activation="relu6")(x)
        y = layers.DepthwiseConv2D(3, strides=s, padding="same", activation="relu6")(y)
        y = layers.Conv2D(c, 1)(y)
        x = layers.Add()([x, y]) if s == 1 and x.shape[-1] == c else y
    x = layers.Conv2D(HEAD, 1, activation="relu6")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10)(x), name=NAME)


def with_softmax(logits_model: keras.Model) -> keras.Model:
    inp = keras.Input(logits_model.input_shape[1:])
    return keras.Model(inp, layers.Softmax()(logits_model(inp)), name=NAME)


def splits(x: np.ndarray, y: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import train_test_split

    pre = np.isin(y, PRE_CLASSES)
    pxtr, pxte, pytr, pyte = train_test_split(x[pre], y[pre], test_size=0.25, random_state=SEED, stratify=y[pre])
    fx, fy = x[~pre], y[~pre]
    fxtr, fxte, fytr, fyte = train_test_split(fx, fy, train_size=FT_TRAIN, random_state=SEED, stratify=fy)
    return {"pretrain": (pxtr, pytr), "pretest": (pxte, pyte), "train": (fxtr, fytr), "test": (fxte, fyte)}


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict(x, verbose=0, batch_size=256).argmax(-1) == y).mean())


def int8_accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    (probs,) = litert_run(model_bytes, quantize_like_input(model_bytes, x))
    return float((probs.argmax(-1) == y).mean())


def fine_tune(pretrained: keras.Model, x: np.ndarray, y: np.ndarray, trainable: str, epochs: int, lr: float,
              seed: int) -> keras.Model:
    """Plain SGD, batch 1, in the per-epoch orders of tinymem/train/run.py (same seed, same RNG)."""
    model = keras.models.clone_model(pretrained)
    model.set_weights(pretrained.get_weights())
    if trainable == "last":
        for layer in model.layers[:-1]:
            layer.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        model.fit(x[order], y[order], batch_size=1, epochs=1, shuffle=False, verbose=0)
    return model


def load_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return splits((d.images / 16.0).astype(np.float32)[..., None], d.target.astype(np.int64))


def pretrain(x: np.ndarray, y: np.ndarray) -> tuple[keras.Model, bytes, np.ndarray]:
    """(float logits model, int8 .tflite with softmax, the calibration samples)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    logits = build_logits_model()
    logits.compile(optimizer=keras.optimizers.Adam(PRE_LR),
                   loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=PRE_LABEL_SMOOTHING))
    logits.fit(x, np.eye(10, dtype=np.float32)[y], epochs=PRE_EPOCHS, batch_size=PRE_BATCH, verbose=0)
    # Calibrated on pretraining digits only: the model exists before the new task does.
    rep = x[np.random.default_rng(SEED).permutation(len(x))[:64]]
    return logits, convert(with_softmax(logits), rep), rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=FT_EPOCHS, help="fine-tuning epochs of the float baselines")
    ap.add_argument("--lr", type=float, default=FT_LR, help="fine-tuning learning rate of the float baselines")
    ap.add_argument("--dry-run", action="store_true", help="print the numbers, write nothing")
    args = ap.parse_args()
    start = time.perf_counter()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    data = load_splits()
    logits, model_bytes, rep = pretrain(*data["pretrain"])

    tuned = {(which, seed): fine_tune(logits, *data["train"], which, args.epochs, args.lr, seed)
             for which in ("all", "last") for seed in ORDER_SEEDS}
    results = {
        "pretrain_test_float": accuracy(logits, *data["pretest"]),
        "pretrain_test_int8": int8_accuracy(model_bytes, *data["pretest"]),
        "before_int8": int8_accuracy(model_bytes, *data["test"]),
        "full_float_finetune": accuracy(tuned["all", SEED], *data["test"]),
        "full_float_finetune_int8": int8_accuracy(convert(with_softmax(tuned["all", SEED]), rep), *data["test"]),
        "last_layer_float_finetune": accuracy(tuned["last", SEED], *data["test"]),
        "full_float_finetune_by_order_seed": [accuracy(tuned["all", s], *data["test"]) for s in ORDER_SEEDS],
        "last_layer_float_finetune_by_order_seed": [accuracy(tuned["last", s], *data["test"]) for s in ORDER_SEEDS],
    }
    info = {
        "model": f"{NAME}.tflite", "dataset": "sklearn load_digits (8x8, pixel / 16)",
        "pretrain": {"classes": list(PRE_CLASSES), "train_samples": len(data["pretrain"][1]),
                     "test_samples": len(data["pretest"][1]), "optimizer": "Adam", "lr": PRE_LR,
                     "label_smoothing": PRE_LABEL_SMOOTHING,
                     "epochs": PRE_EPOCHS, "batch": PRE_BATCH, "split": "train_test_split(test_size=0.25, "
                     f"random_state={SEED}, stratify=y) of the 0-4 digits"},
        "finetune": {"classes": [5, 6, 7, 8, 9], "train_samples": len(data["train"][1]),
                     "test_samples": len(data["test"][1]), "optimizer": "SGD (no momentum), batch 1, constant lr",
                     "lr": args.lr, "epochs": args.epochs, "order_seed": SEED, "order_seeds": list(ORDER_SEEDS),
                     "order": "per epoch numpy.random.default_rng(order_seed).permutation(N), as tinymem train",
                     "split": f"train_test_split(train_size={FT_TRAIN}, random_state={SEED}, "
                              "stratify=y) of the 5-9 digits",
                     "last_layer": "only the final Dense (FULLY_CONNECTED) trainable"},
        "architecture": {"input": [8, 8, 1], "stem": STEM, "blocks (expansion, channels, stride)": BLOCKS,
                         "head": HEAD},
        "accuracy": results,
        "notes": {"before_int8": "the 10-way head never saw 5-9 during pretraining, so it predicts 0-4",
                  "full_float_finetune_int8": "the fully fine-tuned float model converted to int8 (same calibration)",
                  "by_order_seed": "the same fine-tuning with the per-epoch orders of each of order_seeds: "
                                   "how much batch-1 SGD depends on the order"},
    }
    print(json.dumps(info["accuracy"], indent=2), f"({time.perf_counter() - start:.0f} s)")
    if args.dry_run:
        return
    MODELS.mkdir(exist_ok=True)
    (MODELS / f"{NAME}.tflite").write_bytes(model_bytes)
    for split in ("train", "test", "pretest"):
        x, y = data[split]
        np.savez_compressed(MODELS / f"{NAME}.{split}.npz", x=quantize_like_input(model_bytes, x), y=y)
    (MODELS / f"{NAME}.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {NAME}.tflite ({len(model_bytes):,} B), .train/.test/.pretest.npz, .json to {MODELS}")


if __name__ == "__main__":
    main()
