"""The raster picture of one sample going through the liquid: input events, the reservoir's
spikes, a few membrane traces. matplotlib's object API on Agg: headless, no global state."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..errors import TinymemError
from .events import EventSet, bin_events
from .reservoir import LsmConfig, run

ON, OFF, SPIKE = "#d62728", "#1f77b4", "#222222"


def plot_raster(cfg: LsmConfig, ev: EventSet, index: int, path: str | Path, mode: str = "fixed") -> dict:
    """Write a PNG for sample `index`; returns a few numbers about it."""
    if not 0 <= index < len(ev):
        raise TinymemError(f"--index {index} is outside the {len(ev)} samples of the event file")
    one = ev.subset(np.array([index]))
    frames = bin_events(one, cfg.steps, cfg.inputs)
    enc = run(cfg, frames, mode, record=True)
    spikes, trace = enc.spikes[0], enc.trace[0]
    scale = float(1 << cfg.frac_bits) if mode == "fixed" else 1.0
    fig = Figure(figsize=(10, 8.5), layout="constrained")
    ax_in, ax_sp, ax_v = fig.subplots(3, 1, gridspec_kw={"height_ratios": [2, 2, 1.2]}, sharex=False)
    label = f", label {int(ev.labels[index])}" if ev.labels is not None else ""
    if one.frames is None:
        t, x, y, p = one.sample(0)
        side = int(round(cfg.inputs ** 0.5))
        x0, y0 = (ev.width - side) // 2, (ev.height - side) // 2
        pix = (y.astype(int) - y0) * side + (x.astype(int) - x0)
        inside = (pix >= 0) & (pix < cfg.inputs)
        step_us = ev.duration_us / cfg.steps
        for pol, color, name in ((1, ON, "ON"), (0, OFF, "OFF")):
            m = inside & (p == pol)
            ax_in.scatter(t[m] / step_us, pix[m], s=1.5, c=color, lw=0, label=f"{name} ({int(m.sum())})")
        ax_in.legend(loc="upper right", markerscale=6, fontsize=8)
        ax_in.set_title(f"input events, sample {index}{label} ({int(inside.sum())} events in the "
                        f"{side}×{side} input square)")
    else:
        tt, ii = np.nonzero(frames[0])
        ax_in.scatter(tt, ii, s=2, c=SPIKE, lw=0)
        ax_in.set_title(f"input frames, sample {index}{label}")
    ax_in.set_ylabel("input (pixel y·w + x)")
    ax_in.set_xlim(-0.5, cfg.steps - 0.5)
    tt, nn = np.nonzero(spikes)
    ax_sp.scatter(tt, nn, s=4, c=SPIKE, marker="|", lw=1)
    ax_sp.set_xlim(-0.5, cfg.steps - 0.5)
    ax_sp.set_ylim(-1, cfg.neurons)
    ax_sp.set_ylabel("neuron")
    ax_sp.set_title(f"reservoir spikes ({mode} point): {len(tt)} spikes, "
                    f"{np.count_nonzero(spikes.any(0))} of {cfg.neurons} neurons active")
    busiest = np.argsort(-spikes.sum(0), kind="stable")[:3]
    for j in busiest:
        ax_v.plot(np.arange(cfg.steps), trace[:, j] / scale, lw=1, label=f"neuron {j}")
    ax_v.axhline(cfg.threshold, color="k", ls="--", lw=0.8, label=f"threshold {cfg.threshold:g}")
    ax_v.set_xlim(-0.5, cfg.steps - 0.5)
    ax_v.set_xlabel(f"time step ({ev.duration_us / cfg.steps / 1000:g} ms each)")
    ax_v.set_ylabel("membrane")
    ax_v.legend(loc="upper right", fontsize=8, ncol=4)
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise TinymemError(f"cannot write {path}: {exc.strerror}") from None
    return {"index": index, "spikes": int(len(tt)), "active_neurons": int(np.count_nonzero(spikes.any(0))),
            "input_spikes": int(frames.sum()), "path": str(path)}
