"""Contribution analysis: how much each sparse update is worth, measured (Tiny Training, Lin et al.
2022). Each candidate update is fine-tuned on its own from the deployed int8 model with the numpy
reference trainer, and its accuracy gain over the untrained model goes in a table; the search
(tinymem/train/search.py) adds gains up, as the paper does.

Candidates: the biases of the last k updatable layers (k in `bias_ks`), and the weights of each of
the last `max_weight_ops` updatable layers alone at every ratio of RATIOS. A run is long (one
fine-tuning per candidate), so the table is cached as JSON and the data can be subsampled.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import TinymemError
from ..model.graph import Graph
from ..npz import read_npz
from .memory import updatable_ops, weights_per_channel
from .scheme import RATIOS, Scheme, logits_op, read_json_object, updated_channels

MEASURED = "measured: accuracy gain of fine-tuning each candidate alone (tinymem train-plan)"
PARAM_HEURISTIC = "heuristic, not measured: gain proportional to the parameters updated"


@dataclass
class GainTable:
    """Gains of the candidate updates; gains of a scheme's parts add up."""

    model: str
    bias_ops: list[int]  # updatable ops, last first: bias k updates the biases of bias_ops[:k]
    bias: dict[int, float]  # k -> gain (k = 0 is always there, gain 0)
    weights: dict[int, dict[float, float]]  # op index -> ratio (> 0) -> gain
    source: str = MEASURED
    base_accuracy: float | None = None
    details: dict = field(default_factory=dict)  # how it was measured: epochs, samples, seconds

    def scheme_gain(self, scheme: Scheme) -> float:
        """The summed gain of a scheme made of this table's candidates."""
        k = len(scheme.bias_ops)
        if sorted(scheme.bias_ops) != sorted(self.bias_ops[:k]) or k not in self.bias:
            raise TinymemError(f"biases {sorted(scheme.bias_ops)} are not the last {k} of the gain table")
        total = self.bias[k]
        for i, r in scheme.weight_ratios.items():
            if r > 0:
                if r not in self.weights.get(i, {}):
                    raise TinymemError(f"the gain table has no entry for the weights of op {i} at ratio {r}")
                total += self.weights[i][r]
        return total

    def as_dict(self) -> dict:
        return {"model": self.model, "source": self.source, "metric": "accuracy gain over the untrained model",
                "base_accuracy": self.base_accuracy, "details": self.details,
                "bias": {"ops": self.bias_ops, "gain": {str(k): v for k, v in sorted(self.bias.items())}},
                "weights": {str(i): {str(r): v for r, v in sorted(rs.items())} for i, rs in sorted(self.weights.items())}}

    @classmethod
    def from_dict(cls, d: dict) -> "GainTable":
        try:
            bias = {int(k): float(v) for k, v in d["bias"]["gain"].items()}
            bias.setdefault(0, 0.0)
            return cls(model=str(d.get("model", "")), bias_ops=[int(i) for i in d["bias"]["ops"]], bias=bias,
                       weights={int(i): {float(r): float(v) for r, v in rs.items()} for i, rs in d["weights"].items()},
                       source=str(d.get("source", MEASURED)), base_accuracy=d.get("base_accuracy"),
                       details=dict(d.get("details", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TinymemError(f"bad gain table: missing or malformed {e}") from None

    def check(self, g: Graph) -> None:
        """The table must name this graph's updatable ops (a table cached for another model would
        silently pick nonsense)."""
        ops = {op.index for op in updatable_ops(g)}
        stray = sorted((set(self.bias_ops) | set(self.weights)) - ops)
        if stray:
            raise TinymemError(f"the gain table names op {stray[0]}, which is not an updatable op of {g.name} "
                               f"(updatable: {', '.join(map(str, sorted(ops)))}); was it made for another model?")
        if max(self.bias, default=0) > len(self.bias_ops):
            raise TinymemError(f"the gain table has a gain for the last {max(self.bias)} biases but lists "
                               f"{len(self.bias_ops)} ops")


def save_gains(table: GainTable, path: str | Path) -> None:
    try:
        Path(path).write_text(json.dumps(table.as_dict(), indent=2) + "\n")
    except OSError as e:
        raise TinymemError(f"cannot write {path}: {e.strerror}") from None


def load_gains(path: str | Path) -> GainTable:
    return GainTable.from_dict(read_json_object(path, "gain table"))


# ---------------------------------------------------------------------------------------------
# candidates


def default_bias_ks(n: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, 24, ... and n: fine where the gain moves most, sparser beyond."""
    ks, k = ({n} if n else set()), 1
    while k <= n:
        ks.update((k, min(n, k * 3 // 2)))
        k *= 2
    return sorted(ks)


def candidates(g: Graph, max_weight_ops: int = 8, bias_ks: list[int] | None = None,
               ratios: tuple[float, ...] = RATIOS) -> tuple[list[int], list[int], list[tuple[int, float]]]:
    """(bias ops last first, the bias ks to measure, the (op, ratio) weight candidates)."""
    ops = [op.index for op in updatable_ops(g)]
    if not ops:
        raise TinymemError(f"{g.name} has no layer training can update (CONV_2D, DEPTHWISE_CONV_2D or "
                           f"FULLY_CONNECTED with a back-propagatable path to the logits)")
    last_first = ops[::-1]
    ks = default_bias_ks(len(ops)) if bias_ks is None else sorted({k for k in bias_ks if 1 <= k <= len(ops)})
    weights = [(i, r) for i in sorted(last_first[:max_weight_ops]) for r in ratios if r > 0]
    return last_first, ks, weights


def param_count_gains(g: Graph, max_weight_ops: int = 8, bias_ks: list[int] | None = None) -> GainTable:
    """The paper's fallback without data: each candidate's gain is proportional to the parameters it
    updates (a layer's gain grows with ratio), normalised so the largest is 1. Labelled as such."""
    last_first, ks, weights = candidates(g, max_weight_ops, bias_ks)
    channels = {i: int(g.t(g.ops[i].outputs[0]).shape[-1]) for i in last_first}
    bias = {0: 0.0, **{k: float(sum(channels[i] for i in last_first[:k])) for k in ks}}
    w = {}
    for i, r in weights:
        w.setdefault(i, {})[r] = float(updated_channels(g, g.ops[i], r) * weights_per_channel(g, g.ops[i]))
    top = max([*bias.values(), *(v for rs in w.values() for v in rs.values()), 1.0])
    return GainTable(g.name, last_first, {k: v / top for k, v in bias.items()},
                     {i: {r: v / top for r, v in rs.items()} for i, rs in w.items()}, source=PARAM_HEURISTIC)


# ---------------------------------------------------------------------------------------------
# data


def load_dataset(path: str | Path, g: Graph) -> tuple[np.ndarray, np.ndarray]:
    """An .npz with x (int8 [N, *input_shape[1:]]) and y (integer labels < the number of logits)."""
    arrays = read_npz(path)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise TinymemError(f"{path}: no array '{missing[0]}' (a training set holds x: int8 samples and y: labels; "
                           f"it has {', '.join(sorted(arrays)) or 'nothing'})")
    x, y = arrays["x"], arrays["y"]
    want = tuple(g.t(g.inputs[0]).shape[1:])
    if x.dtype != np.int8:
        raise TinymemError(f"{path}: x is {x.dtype}; samples must be int8 (quantized with the model input's "
                           f"scale and zero point)")
    if x.ndim < 1 or tuple(x.shape[1:]) != want:
        raise TinymemError(f"{path}: x has shape {list(x.shape)}; expected [N, {', '.join(map(str, want))}]")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise TinymemError(f"{path}: y must be {x.shape[0]} integer labels, got {y.dtype}{list(y.shape)}")
    if x.shape[0] == 0:
        raise TinymemError(f"{path}: no samples")
    classes = int(g.t(logits_op(g).outputs[0]).size)
    bad = np.flatnonzero((y < 0) | (y >= classes))
    if bad.size:
        raise TinymemError(f"{path}: label {int(y[bad[0]])} of sample {int(bad[0])} is out of range: "
                           f"the model has {classes} classes (0..{classes - 1})")
    return x, y.astype(np.int64)


def subsample(x: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n >= len(x):
        return x, y
    keep = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
    return x[keep], y[keep]


def split_holdout(x: np.ndarray, y: np.ndarray, seed: int, share: float = 0.25):
    """Without an eval set, a quarter of the training set (at random, seeded) is held out."""
    if len(x) < 2:
        raise TinymemError("one sample cannot be both trained on and held out: give --eval or more samples")
    order = np.random.default_rng(seed).permutation(len(x))
    cut = max(1, int(round(len(x) * share)))
    return (x[order[cut:]], y[order[cut:]]), (x[order[:cut]], y[order[:cut]])


# ---------------------------------------------------------------------------------------------
# measuring


def _reference_trainer():
    from .reference import Trainer

    return Trainer


def fine_tune_accuracy(g: Graph, scheme: Scheme, train, val, epochs: int, seed: int, trainer_cls,
                       lr: float | None = None, on_step: Callable[[], None] | None = None) -> float:
    """Accuracy on `val` after `epochs` of batch-1 SGD on `train` (shuffled, seeded) from `g` as
    deployed. The trainer keeps its own copies of the parameters it updates (the reference's
    contract), so every candidate starts from the same model; sharing `g` lets the reference
    reuse its compiled frozen prefix across candidates."""
    trainer = trainer_cls(g, scheme)
    xs, ys = train
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for j in rng.permutation(len(xs)):
            trainer.step(xs[j], int(ys[j]), lr)
            if on_step is not None:
                on_step()
    return float(trainer.evaluate(*val))


def measure_gains(g: Graph, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                  epochs: int = 1, max_weight_ops: int = 8, bias_ks: list[int] | None = None,
                  lr: float | None = None, seed: int = 0, trainer_cls=None, progress: bool = True) -> GainTable:
    """The contribution table: each candidate fine-tuned alone, its accuracy minus the untrained
    model's on `val`. `trainer_cls` defaults to the numpy reference (tinymem/train/reference.py)."""
    trainer_cls = trainer_cls or _reference_trainer()
    if epochs < 1:
        raise TinymemError(f"--epochs must be >= 1, got {epochs}")
    last_first, ks, weights = candidates(g, max_weight_ops, bias_ks)
    jobs: list[tuple[str, Scheme]] = [(f"biases of the last {k}", Scheme(bias_ops=last_first[:k])) for k in ks]
    jobs += [(f"op {i} weights at {r:g}", Scheme(weight_ratios={i: r})) for i, r in weights]
    if lr is not None:
        for _, s in jobs:
            s.lr = lr
    start = time.perf_counter()
    base = float(trainer_cls(g, Scheme(bias_ops=last_first[:1])).evaluate(*val))
    results: list[float] = []
    steps = epochs * len(train[0])
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # On stderr: `train-plan --json` keeps stdout for the JSON.
    with Progress(*columns, disable=not progress, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("contribution analysis", total=len(jobs) * steps)
        for name, scheme in jobs:
            bar.update(task, description=f"fine-tuning {name}")
            acc = fine_tune_accuracy(g, scheme, train, val, epochs, seed, trainer_cls,
                                     on_step=lambda: bar.advance(task))
            results.append(acc - base)
    bias = {0: 0.0, **{k: results[n] for n, k in enumerate(ks)}}
    w: dict[int, dict[float, float]] = {}
    for (i, r), gain in zip(weights, results[len(ks):]):
        w.setdefault(i, {})[r] = gain
    return GainTable(g.name, last_first, bias, w, base_accuracy=base,
                     details={"epochs": epochs, "train_samples": int(len(train[0])), "eval_samples": int(len(val[0])),
                              "seed": seed, "lr": lr, "seconds": round(time.perf_counter() - start, 2)})


__all__ = ["GainTable", "MEASURED", "PARAM_HEURISTIC", "candidates", "default_bias_ks", "fine_tune_accuracy",
           "load_dataset", "load_gains", "measure_gains", "param_count_gains", "save_gains", "split_holdout",
           "subsample"]
