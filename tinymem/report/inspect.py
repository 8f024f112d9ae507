"""What `tinymem inspect` shows: ops, tensors, shapes, quantization, MACs and weight bytes."""
from __future__ import annotations

from rich.table import Table

from ..errors import TinymemError
from ..model.graph import Graph
from ..ops import REGISTRY


def _quant(t) -> str:
    if t.quant is None:
        return "-"
    if t.quant.per_channel:
        return f"per-channel[{t.quant.scale.size}] axis {t.quant.axis}"
    scale, zp = t.quant.scalar()
    return f"s={scale:.6g} zp={zp}"


def model_summary(g: Graph) -> dict:
    """Plain data about a model; ops tinymem cannot run are listed with the reason, not raised."""
    ops = []
    total_macs = 0
    for op in g.ops:
        d = REGISTRY.get(op.kind)
        entry = {
            "index": op.index, "op": op.kind,
            "inputs": [list(g.t(i).shape) for i in op.inputs if i >= 0 and not g.t(i).is_const],
            "outputs": [list(g.t(i).shape) for i in op.outputs],
            "weight_bytes": sum(g.t(i).nbytes for i in op.inputs if i >= 0 and g.t(i).is_const),
            "macs": None, "supported": d is not None, "problem": None,
        }
        try:
            if d is None:
                raise TinymemError("op not supported")
            d.validate(op, g)
            entry["macs"] = d.macs(op, g)
            total_macs += entry["macs"]
        except TinymemError as exc:
            entry["supported"], entry["problem"] = False, str(exc)
        ops.append(entry)
    tensors = [{
        "index": t.index, "name": t.name, "shape": list(t.shape), "dtype": t.dtype, "const": t.is_const,
        "bytes": t.nbytes, "scale": None if t.quant is None else [float(s) for s in t.quant.scale[:8]],
        "zero_point": None if t.quant is None else [int(z) for z in t.quant.zero_point[:8]],
        "per_channel": bool(t.quant is not None and t.quant.per_channel),
    } for t in g.tensors]
    return {
        "model": g.name, "ops": ops, "tensors": tensors,
        "inputs": [list(g.t(i).shape) for i in g.inputs], "outputs": [list(g.t(i).shape) for i in g.outputs],
        "macs": total_macs, "weight_bytes": sum(t.nbytes for t in g.tensors if t.is_const),
        "supported": all(o["supported"] for o in ops),
    }


def ops_table(g: Graph, summary: dict) -> Table:
    table = Table(title=f"{summary['model']}: {len(summary['ops'])} ops, {summary['macs']:,} MACs, "
                        f"{summary['weight_bytes']:,} weight bytes")
    for col, just in (("#", "right"), ("op", "left"), ("in", "left"), ("out", "left"),
                      ("MACs", "right"), ("weights B", "right"), ("", "left")):
        table.add_column(col, justify=just)
    for o in summary["ops"]:
        table.add_row(str(o["index"]), o["op"], " ".join(map(str, o["inputs"])), " ".join(map(str, o["outputs"])),
                      "-" if o["macs"] is None else f"{o['macs']:,}", f"{o['weight_bytes']:,}",
                      "" if o["supported"] else f"[red]{o['problem']}[/red]")
    return table


def tensors_table(g: Graph) -> Table:
    table = Table(title="tensors")
    for col in ("#", "name", "shape", "dtype", "quantization", "bytes", "kind"):
        table.add_column(col, justify="right" if col in ("#", "bytes") else "left")
    for t in g.tensors:
        table.add_row(str(t.index), t.name[:48], str(list(t.shape)), t.dtype, _quant(t), f"{t.nbytes:,}",
                      "const" if t.is_const else "activation")
    return table
