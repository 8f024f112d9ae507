"""`tinymem lsm ...`: the resistive-memory liquid state machine, registered on the `cli` group of
tinymem/cli.py (imported at its end). Thin: parse, call tinymem.lsm, print."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .cli import _print_json, cli, console
from .errors import TinymemError
from .lsm.reservoir import LsmConfig as _D  # the defaults: one place (the paper's settings)

PAPER_NMNIST = 0.891  # Lin et al.: software LSM on N-MNIST (89.7 % on the RRAM macro)


@contextlib.contextmanager
def _progress(what: str, quiet: bool = False):
    """A rich progress bar; yields a callback(done, total). Silent with --json (stdout is data) and
    when stdout is not a terminal (a log gets no half-drawn bars)."""
    if quiet or not console.is_terminal:
        yield lambda done, total: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        update.describe = lambda text: bar.update(task, description=text)  # type: ignore[attr-defined]
        yield update


@cli.group()
def lsm() -> None:
    """Resistive-memory liquid state machine: event encoder on the board, readout on the host."""


@lsm.command()
@click.option("--inputs", type=int, default=_D.inputs, show_default=True)
@click.option("--neurons", type=int, default=_D.neurons, show_default=True)
@click.option("--seed", type=int, default=_D.seed, show_default=True, help="Which RRAM array: every weight follows from it.")
@click.option("--decay", type=float, default=_D.decay, show_default=True)
@click.option("--threshold", type=float, default=_D.threshold, show_default=True)
@click.option("--steps", type=int, default=_D.steps, show_default=True)
@click.option("--p-in", type=float, default=_D.p_in, show_default=True, help="Input connection probability.")
@click.option("--p-rec", type=float, default=_D.p_rec, show_default=True, help="Recurrent connection probability.")
@click.option("--gain-in", type=float, default=_D.gain_in, show_default=True)
@click.option("--gain-rec", type=float, default=_D.gain_rec, show_default=True)
@click.option("--cycle", type=int, default=_D.cycle, show_default=True, help="Programming cycle (cycle-to-cycle variation).")
@click.option("--windows", type=int, default=_D.windows, show_default=True, help="Spike counts per this many time windows.")
@click.option("--membrane", is_flag=True, help="Also encode each neuron's mean membrane potential.")
@click.option("--device", "device_path", type=click.Path(dir_okay=False), help="Device parameters (JSON, see `lsm device`).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Where to write lsm.json.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def make(inputs, neurons, seed, decay, threshold, steps, p_in, p_rec, gain_in, gain_rec, cycle, windows, membrane,
         device_path, out, as_json) -> None:
    """Define a reservoir (the weights follow from the seed and the device model) and write it."""
    from .lsm.codegen import context
    from .lsm.device import DeviceParams, load_device
    from .lsm.reservoir import LsmConfig, weights

    dev = load_device(device_path) if device_path else DeviceParams()
    cfg = LsmConfig(inputs, neurons, seed, decay, threshold, steps, p_in, p_rec, gain_in, gain_rec, cycle,
                    windows=windows, membrane=membrane, device=dev)
    cfg.save(out)
    w = weights(cfg)
    nz = np.concatenate([w.w_in[w.mask_in], w.w_rec[w.mask_rec]])
    flash, seed_ctx = context(cfg, "flash", w=w), context(cfg, "seed")
    info = {"out": out, "input_synapses": int(w.mask_in.sum()), "recurrent_synapses": int(w.mask_rec.sum()),
            "weight_levels_mean": float(nz.mean()) if nz.size else 0.0, "weight_levels_std": float(nz.std()) if nz.size else 0.0,
            "weight_flash_bytes": flash["weight_bytes"], "state_bytes": {"flash": flash["state_bytes"], "seed": seed_ctx["state_bytes"]},
            "fixed_point": cfg.fixed(), "lsm": cfg.as_dict()}
    if as_json:
        _print_json(info)
        return
    console.print(f"wrote {out}: {inputs} inputs -> {neurons} LIF neurons, {steps} steps, seed {seed}; "
                  f"{info['input_synapses']:,} input + {info['recurrent_synapses']:,} recurrent synapses "
                  f"(level differences {info['weight_levels_mean']:+.2f} ± {info['weight_levels_std']:.2f})")
    console.print(f"on a board: weights {flash['weight_bytes']:,} B of flash (--storage flash) or none (--storage seed); "
                  f"state {flash['state_bytes']:,} B of RAM")


@lsm.command()
@click.option("--device", "device_path", type=click.Path(dir_okay=False), help="Device parameters (JSON); default the built-in.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--samples", type=int, default=100_000, show_default=True, help="Devices to draw.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Write the parameters as JSON (a file to edit).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def device(device_path, seed, samples, out, as_json) -> None:
    """The RRAM device model: its parameters and the statistics of devices drawn from it."""
    from .lsm.device import DeviceParams, device_stats, load_device

    dev = load_device(device_path) if device_path else DeviceParams()
    if out:
        try:
            Path(out).write_text(json.dumps(dev.as_dict(), indent=2) + "\n")
        except OSError as exc:
            raise TinymemError(f"cannot write {out}: {exc.strerror}") from None
    stats = device_stats(dev, seed, samples)
    if as_json:
        _print_json({"device": dev.as_dict(), "measured": stats})
        return
    table = Table(title=f"RRAM device model ({samples:,} devices drawn)")
    for col in ("quantity", "parameter", "measured"):
        table.add_column(col)
    table.add_row("mean conductance (free cells)", f"{dev.mean_us:g} µS", f"{stats['mean_us']:.2f} µS")
    table.add_row("spread, d2d ⊕ c2c", f"{np.hypot(dev.d2d_sigma_us, dev.c2c_sigma_us):.2f} µS", f"{stats['sigma_us']:.2f} µS")
    table.add_row("cycle-to-cycle spread", f"{dev.c2c_sigma_us:g} µS", f"{stats['c2c_sigma_us']:.2f} µS")
    table.add_row("levels", str(dev.levels), f"{stats['levels_used']} used")
    table.add_row("stuck at g_max / g_min", f"{dev.stuck_on:.4f} / {dev.stuck_off:.4f}",
                  f"{stats['stuck_on']:.4f} / {stats['stuck_off']:.4f}")
    table.add_row("pair weight (levels)", "L+ − L−", f"{stats['weight_mean_levels']:+.2f} ± {stats['weight_sigma_levels']:.2f}")
    console.print(table)
    if out:
        console.print(f"parameters written to {out}")


@lsm.command()
@click.argument("source", type=click.Choice(["digits", "nmnist"]))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="Event file to write (.npz).")
@click.option("--root", type=click.Path(file_okay=False), help="nmnist: the unzipped data set (Train/, Test/).")
@click.option("--split", "which", type=click.Choice(["all", "train", "test"]), default="all", show_default=True)
@click.option("--limit", type=int, help="At most this many samples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--noise-hz", type=float, default=1.0, show_default=True, help="Background events per pixel per second.")
@click.option("--task", type=click.Choice(["digits", "digits-direction"]), default="digits", show_default=True,
              help="digits-direction: every digit also recorded with the saccades run backwards (labels 10-19), "
                   "a task that lives in the order of events.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def events(source, out, root, which, limit, seed, noise_hz, task, as_json) -> None:
    """Event recordings as a tinymem event file. SOURCE digits: simulate an event camera's saccades
    over scikit-learn's digits; nmnist: convert the N-MNIST recordings under --root."""
    from .lsm.events import SaccadeParams, digits_events, nmnist_events

    if source == "nmnist" and not root:
        raise TinymemError("nmnist needs --root, the folder holding N-MNIST's Train/ and Test/")
    with console.status("reading N-MNIST" if root else "simulating saccades") if not as_json else contextlib.nullcontext():
        ev = (nmnist_events(root, which, limit) if source == "nmnist"
              else digits_events(SaccadeParams(noise_hz=noise_hz), seed, which, limit, task=task))
    ev.save(out)
    per = np.diff(ev.offsets)
    info = {"out": out, "source": source, "samples": len(ev), "train": int(np.sum(ev.split == 0)),
            "test": int(np.sum(ev.split == 1)), "events_per_sample": float(per.mean()) if len(per) else 0.0,
            "width": ev.width, "height": ev.height, "duration_us": ev.duration_us}
    if as_json:
        _print_json(info)
        return
    console.print(f"wrote {out}: {info['samples']} recordings ({info['train']} train, {info['test']} test) of "
                  f"{ev.width}×{ev.height} pixels, {ev.duration_us / 1000:g} ms, {info['events_per_sample']:.0f} events each")


@lsm.command()
@click.argument("lsm_json", type=click.Path(dir_okay=False))
@click.option("--events", "events_path", required=True, type=click.Path(dir_okay=False))
@click.option("--board", "backend", default="numpy", show_default=True,
              help="numpy (reference model), host (generated C, host compiler) or a board id (see `tinymem boards`).")
@click.option("--float", "float_mode", is_flag=True, help="numpy's float model instead of fixed point.")
@click.option("--storage", type=click.Choice(["flash", "seed"]), default="flash", show_default=True,
              help="Weights in flash, or regenerated from the seed on the board.")
@click.option("--split", "which", type=click.Choice(["all", "train", "test"]), default="all", show_default=True)
@click.option("--limit", type=int, help="Encode at most this many samples.")
@click.option("--polarity", type=click.Choice(["both", "on", "off"]), default="both", show_default=True)
@click.option("--project", "project_dir", type=click.Path(file_okay=False), help="Keep the generated project here.")
@click.option("--port", help="Serial port of a real board's UART.")
@click.option("--timeout", type=float, default=30.0, show_default=True)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Encodings file to write (.npz).")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as one JSON object.")
def encode(lsm_json, events_path, backend, float_mode, storage, which, limit, polarity, project_dir, port, timeout,
           out, as_json) -> None:
    """Encode event recordings with the reservoir (on the host or a board); write the spike counts."""
    from .lsm.encode import EncodingFile, encode as run_encode
    from .lsm.events import bin_events, event_counts, load_events
    from .lsm.reservoir import load_lsm

    cfg = load_lsm(lsm_json)
    ev = load_events(events_path)
    if which != "all":
        if ev.split is None:
            raise TinymemError(f"{events_path}: no 'split' field to select --split {which} from")
        ev = ev.subset(np.flatnonzero(ev.split == (1 if which == "test" else 0)))
    if limit is not None:
        ev = ev.subset(np.arange(min(limit, len(ev))))
    frames = bin_events(ev, cfg.steps, cfg.inputs, polarity)
    with _progress(f"encoding on {backend}", as_json) as progress:
        enc = run_encode(cfg, frames, backend, "float" if float_mode else "fixed", storage, project_dir, port, timeout,
                         progress, getattr(progress, "describe", None))
    profile = enc.profile | {"mode": "float" if float_mode else "fixed", "polarity": polarity,
                             "input_spikes_per_sample": float(frames.sum() / max(len(frames), 1)),
                             "output_spikes_per_sample": float(enc.counts.sum() / max(len(frames), 1))}
    EncodingFile(enc.counts, event_counts(ev, cfg.inputs), cfg.as_dict(), profile, enc.membrane, ev.labels,
                 ev.split).save(out)
    if as_json:
        _print_json(profile | {"out": out})
        return
    console.print(f"encoded {len(frames)} samples on {backend} ({profile['mode']} point); wrote {out}")
    if "instructions_per_sample" in profile or "cycles_per_sample" in profile:
        unit = profile["unit"]
        console.print(f"{profile[f'{unit}_per_sample']:,} {unit} per sample (median; {profile['clock_note'].split(';')[0]}); "
                      f"RAM {profile['peak_sram_measured_bytes']:,} B of {profile['ram_limit_bytes']:,} B, "
                      f"flash {profile['flash_bytes']:,} B (weights {profile['weight_bytes']:,} B, --storage {storage})")
    elif "host_ms_per_sample" in profile:
        console.print(f"{profile['host_ms_per_sample']} ms per sample on this machine")


def _fit_eval(train, test, hidden, epochs, l2, seed, feature: str, quiet: bool) -> dict:
    from .lsm.readout import evaluate, fit_readout

    pick = (lambda e: e.features()) if feature == "reservoir" else (lambda e: e.input_counts)
    (xt, yt), (xe, ye) = ((pick(e), y) for e, y in (train, test))
    with _progress(f"training the {feature} readout", quiet) as progress:
        r = fit_readout(xt, yt, hidden=hidden, epochs=epochs, l2=l2, seed=seed, progress=progress)
    return evaluate(r, xe, ye) | {"train_accuracy": evaluate(r, xt, yt)["accuracy"], "features": int(xt.shape[1])}


class _Rows:
    """Rows of an encodings file with their labels, subset-able."""

    def __init__(self, e, index=None):
        self.e, self.index = e, np.arange(len(e.counts)) if index is None else index

    def features(self):
        return self.e.features()[self.index]

    @property
    def input_counts(self):
        return self.e.input_counts[self.index]


def _split(path: str, eval_path: str | None):
    from .lsm.encode import load_encoding

    a = load_encoding(path)
    if a.labels is None:
        raise TinymemError(f"{path}: no labels to train a readout on")
    if eval_path:
        b = load_encoding(eval_path)
        if b.labels is None:
            raise TinymemError(f"{eval_path}: no labels to evaluate on")
        if b.counts.shape[1] != a.counts.shape[1]:
            raise TinymemError(f"{eval_path}: {b.counts.shape[1]} features per sample, {path} has {a.counts.shape[1]}")
        return (_Rows(a), a.labels), (_Rows(b), b.labels), a
    if a.split is None or not (a.split == 0).any() or not (a.split == 1).any():
        raise TinymemError(f"{path}: no train/test 'split' field with both parts: give --eval FILE")
    tr, te = np.flatnonzero(a.split == 0), np.flatnonzero(a.split == 1)
    return (_Rows(a, tr), a.labels[tr]), (_Rows(a, te), a.labels[te]), a


@lsm.command()
@click.argument("encodings", type=click.Path(dir_okay=False))
@click.option("--eval", "eval_path", type=click.Path(dir_okay=False),
              help="Evaluate on this encodings file (train on all of ENCODINGS); default: ENCODINGS' own test split.")
@click.option("--hidden", type=int, default=0, show_default=True, help="Hidden units (0 = a linear softmax readout).")
@click.option("--epochs", type=int, default=300, show_default=True)
@click.option("--l2", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also train the same readout on the raw event counts per pixel.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def fit(encodings, eval_path, hidden, epochs, l2, seed, baseline, as_json) -> None:
    """Train a readout on the host (numpy) and report accuracy and the confusion matrix."""
    train, test, enc = _split(encodings, eval_path)
    result = {"readout": f"{'ANN, %d hidden' % hidden if hidden else 'linear softmax'}",
              "train_samples": len(train[1]), "test_samples": len(test[1]),
              "backend": enc.profile.get("backend"), "mode": enc.profile.get("mode"),
              "reservoir": _fit_eval(train, test, hidden, epochs, l2, seed, "reservoir", as_json),
              "paper_nmnist_accuracy": PAPER_NMNIST}
    if baseline:
        result["raw_counts"] = _fit_eval(train, test, hidden, epochs, l2, seed, "raw event counts", as_json)
    if as_json:
        _print_json(result)
        return
    r = result["reservoir"]
    table = Table(title=f"confusion matrix (rows: true class, columns: predicted), {r['samples']} test samples")
    table.add_column("")
    for c in r["classes"]:
        table.add_column(str(c), justify="right")
    for i, (c, row) in enumerate(zip(r["classes"], r["confusion"])):
        table.add_row(str(c), *(f"[bold]{v}[/bold]" if k == i else (str(v) if v else "·") for k, v in enumerate(row)))
    console.print(table)
    console.print(f"reservoir readout ({result['readout']}, {r['features']} features): "
                  f"test accuracy {100 * r['accuracy']:.1f}% (train {100 * r['train_accuracy']:.1f}%)")
    if baseline:
        b = result["raw_counts"]
        console.print(f"raw event counts, same readout ({b['features']} features): test accuracy {100 * b['accuracy']:.1f}%")
    console.print(f"paper (N-MNIST, software LSM): {100 * PAPER_NMNIST:.1f}%")


@lsm.command()
@click.argument("encodings_a", type=click.Path(dir_okay=False))
@click.argument("encodings_b", type=click.Path(dir_okay=False))
@click.option("--dim", type=int, default=32, show_default=True, help="Dimension of the shared space.")
@click.option("--epochs", type=int, default=300, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def align(encodings_a, encodings_b, dim, epochs, seed, as_json) -> None:
    """Zero-shot transfer between two encoders of the same samples (e.g. two RRAM arrays): contrastive
    projections trained on unlabelled pairs; B's test samples classified with labels from A only."""
    from .lsm.encode import load_encoding
    from .lsm.readout import evaluate, fit_contrastive, fit_readout, zero_shot_accuracy

    a, b = load_encoding(encodings_a), load_encoding(encodings_b)
    if len(a.counts) != len(b.counts) or a.labels is None or b.labels is None or not np.array_equal(a.labels, b.labels):
        raise TinymemError("align needs two encodings of the same labelled samples in the same order")
    if a.split is None or not (a.split == 1).any():
        raise TinymemError(f"{encodings_a}: no test split to evaluate on")
    tr, te = np.flatnonzero(a.split == 0), np.flatnonzero(a.split == 1)
    xa, xb, y = a.features(), b.features(), a.labels
    with console.status("training the contrastive projections") if not as_json else contextlib.nullcontext():
        pa, pb = fit_contrastive(xa[tr], xb[tr], dim=dim, epochs=epochs, seed=seed)
        naive = fit_readout(xa[tr], y[tr], seed=seed)
    result = {
        "pairs": len(tr), "test_samples": len(te), "dim": dim,
        "a_readout_on_a": evaluate(naive, xa[te], y[te])["accuracy"],
        # a readout only reads another encoder's features if they have the same shape at all
        "a_readout_on_b_without_alignment": (evaluate(naive, xb[te], y[te])["accuracy"]
                                             if xa.shape[1] == xb.shape[1] else None),
        "zero_shot_b_with_a_prototypes": zero_shot_accuracy(pb, pa, xb[te], y[te], xa[tr], y[tr]),
        "zero_shot_a_with_b_prototypes": zero_shot_accuracy(pa, pb, xa[te], y[te], xb[tr], y[tr]),
    }
    if as_json:
        _print_json(result)
        return
    unaligned = result["a_readout_on_b_without_alignment"]
    console.print(f"readout trained on A: {100 * result['a_readout_on_a']:.1f}% on A, " +
                  (f"{100 * unaligned:.1f}% on B (no alignment)" if unaligned is not None
                   else "not applicable to B (another feature count)"))
    console.print(f"zero-shot through the shared {dim}-d space: B classified with A's labels "
                  f"{100 * result['zero_shot_b_with_a_prototypes']:.1f}%, A with B's "
                  f"{100 * result['zero_shot_a_with_b_prototypes']:.1f}%")


@lsm.command()
@click.argument("lsm_json", type=click.Path(dir_okay=False))
@click.option("--events", "events_path", required=True, type=click.Path(dir_okay=False))
@click.option("--index", type=int, default=0, show_default=True, help="Which sample.")
@click.option("--float", "float_mode", is_flag=True, help="Float model instead of fixed point.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def plot(lsm_json, events_path, index, float_mode, out, as_json) -> None:
    """Raster plot of one sample: input events, reservoir spikes, membrane traces."""
    from .lsm.events import load_events
    from .lsm.plot import plot_raster
    from .lsm.reservoir import load_lsm

    info = plot_raster(load_lsm(lsm_json), load_events(events_path), index, out, "float" if float_mode else "fixed")
    if as_json:
        _print_json(info)
        return
    console.print(f"wrote {out}: sample {index}, {info['input_spikes']} input spikes -> {info['spikes']} reservoir "
                  f"spikes from {info['active_neurons']} neurons")
