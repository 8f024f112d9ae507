"""Readouts trained on the host (numpy only): the only trained part of an LSM system.

- `fit_readout`: a softmax-regression head (or a one-hidden-layer ANN with `hidden > 0`) on the
  reservoir's spike counts, trained full-batch with Adam and L2 weight decay. Features are
  log-compressed, log(1 + count), then standardised with the training set's statistics (kept
  in the readout so a test set is transformed the same way).
- `evaluate`: accuracy and confusion matrix (rows = true class, columns = predicted).
- `fit_contrastive`: the paper's zero-shot idea, CLIP-style. Two encoders (e.g. the reservoir
  run on two modalities, or on two devices) each get a linear projection into a shared space,
  trained with a symmetric InfoNCE loss so that paired samples land together. Classes never seen
  with labels on one side are then recognised by nearest prototype from the other side
  (`zero_shot_accuracy`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TinymemError


def _compress(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class Readout:
    mean: np.ndarray
    std: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]  # (W, b) per layer; ReLU between layers
    classes: np.ndarray

    def features(self, x: np.ndarray) -> np.ndarray:
        return (_compress(x) - self.mean) / self.std

    def logits(self, x: np.ndarray) -> np.ndarray:
        return _forward(self.layers, self.features(x))[-1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes[np.argmax(self.logits(x), axis=1)]


def _forward(layers, h):
    acts = [h]
    for k, (w, b) in enumerate(layers):
        h = h @ w + b
        if k < len(layers) - 1:
            h = np.maximum(h, 0.0)
        acts.append(h)
    return acts


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class _Adam:
    def __init__(self, params: list[np.ndarray], lr: float):
        self.params, self.lr, self.t = params, lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= self.lr * (m / (1 - 0.9 ** self.t)) / (np.sqrt(v / (1 - 0.999 ** self.t)) + 1e-8)


def fit_readout(x: np.ndarray, y: np.ndarray, hidden: int = 0, epochs: int = 300, lr: float = 0.01,
                l2: float = 1e-3, seed: int = 0, progress=None) -> Readout:
    """Train a readout on features x [N, D] (counts) and integer labels y [N]."""
    x, y = np.asarray(x, np.float64), np.asarray(y)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise TinymemError(f"readout: features {list(x.shape)} and labels {list(y.shape)} do not pair up")
    classes = np.unique(y)
    if len(classes) < 2:
        raise TinymemError("readout: the training set has fewer than two classes")
    f = _compress(x)
    mean, std = f.mean(0), f.std(0) + 1e-6
    h = (f - mean) / std
    target = (y[:, None] == classes[None, :]).astype(np.float64)
    rng = np.random.default_rng(seed)
    dims = [x.shape[1]] + ([hidden] if hidden else []) + [len(classes)]
    layers = [(rng.standard_normal((a, b)) * np.sqrt(2.0 / a) * (0.1 if k == len(dims) - 2 else 1.0), np.zeros(b))
              for k, (a, b) in enumerate(zip(dims[:-1], dims[1:]))]
    params = [p for wb in layers for p in wb]
    opt = _Adam(params, lr)
    n = len(x)
    for epoch in range(epochs):
        acts = _forward(layers, h)
        delta = (_softmax(acts[-1]) - target) / n
        grads = []
        for k in range(len(layers) - 1, -1, -1):
            w, _ = layers[k]
            grads[:0] = [acts[k].T @ delta + l2 * w, delta.sum(0)]
            if k:
                delta = (delta @ w.T) * (acts[k] > 0)
        opt.step(grads)
        if progress:
            progress(epoch + 1, epochs)
    return Readout(mean, std, layers, classes)


def evaluate(readout: Readout, x: np.ndarray, y: np.ndarray) -> dict:
    pred = readout.predict(x)
    classes = readout.classes
    cm = np.zeros((len(classes), len(classes)), np.int64)
    pos = {c: k for k, c in enumerate(classes.tolist())}
    for t, p in zip(np.asarray(y).tolist(), pred.tolist()):
        if t in pos:
            cm[pos[t], pos[p]] += 1
    return {"samples": int(len(y)), "accuracy": float(np.mean(pred == y)) if len(y) else 0.0,
            "classes": classes.tolist(), "confusion": cm.tolist()}


# ---------------------------------------------------------------------------------------------
# Contrastive projections (the paper's zero-shot head)

@dataclass
class Projection:
    mean: np.ndarray
    std: np.ndarray
    w: np.ndarray  # [D, dim]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = ((_compress(x) - self.mean) / self.std) @ self.w
        return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-9)


def _standardise(x):
    f = _compress(x)
    mean, std = f.mean(0), f.std(0) + 1e-6
    return (f - mean) / std, mean, std


def fit_contrastive(xa: np.ndarray, xb: np.ndarray, dim: int = 32, epochs: int = 300, lr: float = 0.01,
                    temperature: float = 0.1, seed: int = 0) -> tuple[Projection, Projection]:
    """Linear projections of two paired feature sets into one space (symmetric InfoNCE, full batch)."""
    if len(xa) != len(xb) or len(xa) < 2:
        raise TinymemError("contrastive readout: the two encoders need the same number (≥ 2) of paired samples")
    ha, ma, sa = _standardise(xa)
    hb, mb, sb = _standardise(xb)
    rng = np.random.default_rng(seed)
    wa = rng.standard_normal((ha.shape[1], dim)) / np.sqrt(ha.shape[1])
    wb = rng.standard_normal((hb.shape[1], dim)) / np.sqrt(hb.shape[1])
    opt = _Adam([wa, wb], lr)
    n = len(ha)
    eye = np.eye(n)
    for _ in range(epochs):
        za, zb = ha @ wa, hb @ wb
        na, nb = np.linalg.norm(za, axis=1, keepdims=True) + 1e-9, np.linalg.norm(zb, axis=1, keepdims=True) + 1e-9
        ua, ub = za / na, zb / nb
        logits = ua @ ub.T / temperature
        # d loss / d logits for the mean of the row-wise and column-wise cross-entropies
        g = ((_softmax(logits) - eye) + (_softmax(logits.T) - eye).T) / (2 * n * temperature)
        gua, gub = g @ ub, g.T @ ua
        # back through the normalisation u = z / |z|
        gza = (gua - ua * (gua * ua).sum(1, keepdims=True)) / na
        gzb = (gub - ub * (gub * ub).sum(1, keepdims=True)) / nb
        opt.step([ha.T @ gza, hb.T @ gzb])
    return Projection(ma, sa, wa), Projection(mb, sb, wb)


def zero_shot_accuracy(proj_a: Projection, proj_b: Projection, xa: np.ndarray, ya: np.ndarray,
                       xb_support: np.ndarray, yb_support: np.ndarray) -> float:
    """Classify encoder-A samples by the nearest class prototype built from encoder-B samples only."""
    zb = proj_b(xb_support)
    classes = np.unique(yb_support)
    protos = np.stack([zb[yb_support == c].mean(0) for c in classes])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True) + 1e-9
    pred = classes[np.argmax(proj_a(xa) @ protos.T, axis=1)]
    return float(np.mean(pred == ya))


def cross_validate(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0, **fit_kw) -> dict:
    """Accuracy over `folds` stratified folds (each sample tested once): the test split of 450
    digits alone moves a percent either way between runs that differ only by chance."""
    x, y = np.asarray(x), np.asarray(y)
    rng = np.random.default_rng([seed, 3])
    fold = np.zeros(len(y), np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % folds
    accs = []
    for k in range(folds):
        tr, te = fold != k, fold == k
        accs.append(evaluate(fit_readout(x[tr], y[tr], seed=seed, **fit_kw), x[te], y[te])["accuracy"])
    return {"folds": folds, "mean": float(np.mean(accs)), "std": float(np.std(accs)), "accuracies": accs}
