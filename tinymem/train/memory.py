"""The SRAM a training step needs: one arena over the forward and backward timeline, plus the
static SRAM copies of the updated parameters (docs/training.md, "Memory model").

The timeline is forward steps 0..n-1 (graph order) then backward steps n+k, k-th running
`path.ops[-1-k]`. The inference lifetimes are reused as they are, except that the activations the
backward pass reads are kept alive to their backward step (and lose any in-place permit: a saved
tensor is never overwritten). Float32 gradient buffers and backward scratch are added, and the
whole timeline is placed by the inference planners and checked like any inference plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TinymemError
from ..model.graph import Graph, Op
from ..ops import opdef, validate_graph
from ..plan.arena import PLANNERS, check_placement
from ..plan.lifetimes import Buffer, Lifetimes, compute_lifetimes
from ..plan.memory import _live_bytes
from .scheme import BackwardPath, Scheme, backward_path, logits_op, trainable_ops, updated_channels

FLOAT = 4  # bytes of a float32 gradient / master value
# The training firmware's I/O outside the arena (docs/training.md, "Generated training firmware"):
# the control input and status output, a copy of the logits (the backward pass reuses their arena
# bytes before the host reads them) and the "SRAM parameters are set" flag.
CONTROL_BYTES = STATUS_BYTES = 8
READY_FLAG_BYTES = 4

# Buffer roles, also the stacks of the training-memory plot.
ACTIVATION, GRADIENT, SCRATCH, BWD_SCRATCH = "activation", "gradient", "scratch", "backward scratch"


@dataclass
class TrainBuffer(Buffer):
    """A buffer of the training timeline: what it holds (role) and, for a forward activation kept
    for the backward pass, the step where inference would have let it die."""

    role: str = ACTIVATION
    forward_last: int | None = None  # set for activations; last > forward_last means "saved"
    bwd_of: int | None = None  # op index, for backward scratch

    @property
    def label(self) -> str:
        if self.role == GRADIENT:
            return f"gradient of tensor {self.tensors[0]}"
        if self.role == BWD_SCRATCH:
            return f"backward scratch of op {self.bwd_of}"
        return super().label

    @property
    def saved(self) -> bool:
        return self.role == ACTIVATION and self.forward_last is not None and self.last > self.forward_last


# ---------------------------------------------------------------------------------------------
# per-op byte counts


def weights_per_channel(g: Graph, op: Op) -> int:
    """K: weights feeding one output channel (conv: k_h*k_w*in_c/groups, depthwise: k_h*k_w, FC: in)."""
    w = g.t(op.inputs[1])
    return w.size // int(g.t(op.outputs[0]).shape[-1])


class _Facts:
    """What every plan of one graph shares, computed once: the graph validated, its inference
    lifetimes (with and without overlaps) and the bytes of each op's emitted arrays. The search
    plans hundreds of schemes of one graph; this is the part that does not depend on the scheme."""

    _cache: dict[int, "_Facts"] = {}
    _KEEP = 8  # graphs remembered (identity-checked: ids are reused after a graph is freed)

    def __init__(self, g: Graph):
        validate_graph(g)
        self.graph = g
        self.lifetimes = {use: compute_lifetimes(g, use_overlaps=use) for use in (True, False)}
        self.arrays: dict[int, dict[str, int]] = {}

    @classmethod
    def of(cls, g: Graph) -> "_Facts":
        f = cls._cache.get(id(g))
        if f is None or f.graph is not g:
            if len(cls._cache) >= cls._KEEP:
                cls._cache.pop(next(iter(cls._cache)))
            f = cls._cache[id(g)] = cls(g)
        return f

    def emitted_bytes(self, op: Op) -> dict[str, int]:
        """Bytes of the constant arrays codegen emits for `op`, by suffix ("w", "bias", ...): the
        SRAM copy of a parameter is exactly its flash array (with the kernels' padding)."""
        if op.index not in self.arrays:
            self.arrays[op.index] = {a.name[len("x_"):]: a.nbytes for a in opdef(op).kernel(op, self.graph, "x").arrays}
        return self.arrays[op.index]


def param_sram_bytes(g: Graph, scheme: Scheme) -> dict[int, int]:
    """Per updated op: the static SRAM its updated parameters take outside the arena. Weights
    (ratio > 0): the whole int8 working copy the forward reads + float32 masters of the updated
    channels. Any update: the int32 folded bias the forward reads; biases updated: + their masters."""
    return {i: op_param_sram_bytes(g, g.ops[i], scheme.weight_ratios.get(i, 0.0), i in scheme.bias_ops)
            for i in scheme.updated_ops()}


def op_param_sram_bytes(g: Graph, op: Op, ratio: float, bias: bool) -> int:
    """param_sram_bytes of one op updated at weight `ratio`, with (`bias`) or without its biases."""
    if ratio <= 0 and not bias:
        return 0
    arrays = _Facts.of(g).emitted_bytes(op)
    total = arrays["bias"]  # the folded int32 bias array, C_out entries
    if ratio > 0:
        total += arrays["w"] + FLOAT * updated_channels(g, op, ratio) * weights_per_channel(g, op)
    if bias:
        total += FLOAT * int(g.t(op.outputs[0]).shape[-1])
    return total


def backward_scratch_bytes(g: Graph, op: Op, scheme: Scheme, reorder: bool) -> int:
    """Arena scratch of `op`'s backward step for its weight/bias gradients. With operator
    reordering each output channel's weight gradient is applied as soon as it is known (conv and
    depthwise: one channel of K floats; FC: each gradient is applied as it is computed, none
    kept; bias gradients are single floats). Without, the gradients of every updated parameter are
    kept to the end of the backward pass."""
    ratio = scheme.weight_ratios.get(op.index, 0.0)
    if reorder:
        return FLOAT * weights_per_channel(g, op) if ratio > 0 and op.kind != "FULLY_CONNECTED" else 0
    weights = FLOAT * updated_channels(g, op, ratio) * weights_per_channel(g, op)
    bias = FLOAT * int(g.t(op.outputs[0]).shape[-1]) if op.index in scheme.bias_ops else 0
    return weights + bias


# ---------------------------------------------------------------------------------------------
# the plan


@dataclass
class TrainPlan:
    graph: Graph
    scheme: Scheme
    path: BackwardPath
    reorder: bool
    planner: str
    lifetimes: Lifetimes  # buffers on the training timeline (forward steps 0..n-1, backward n..)
    offsets: dict[int, int]  # buffer id -> arena byte offset
    arena_bytes: int
    static_bytes: int  # SRAM parameter copies outside the arena
    param_bytes: dict[int, int]  # op index -> its share of static_bytes
    tensor_buffer: dict[int, int]  # forward activation tensor -> buffer id
    grad_buffer: dict[int, int]  # tensor -> buffer id of its float32 gradient
    scratch_buffer: dict[int, int]  # forward op index -> its inference scratch buffer
    bwd_scratch_buffer: dict[int, int]  # op index -> its backward scratch buffer
    backward_step: dict[int, int]  # path op index -> its timeline step (n + k)
    layers: list[dict] = field(default_factory=list)

    @property
    def io_bytes(self) -> int:
        return io_static_bytes(self.graph)

    @property
    def train_peak_sram_bytes(self) -> int:
        return self.arena_bytes + self.static_bytes + self.io_bytes

    @property
    def steps(self) -> int:
        return len(self.graph.ops) + len(self.path.ops)

    def tensor_offset(self, t: int) -> int:
        return self.offsets[self.tensor_buffer[t]]

    def grad_offset(self, t: int) -> int:
        if t not in self.grad_buffer:
            raise TinymemError(f"tensor {t} has no gradient buffer in this training plan")
        return self.offsets[self.grad_buffer[t]]

    def scratch_offset(self, op_index: int) -> int | None:
        b = self.scratch_buffer.get(op_index)
        return None if b is None else self.offsets[b]

    def bwd_scratch_offset(self, op_index: int) -> int | None:
        b = self.bwd_scratch_buffer.get(op_index)
        return None if b is None else self.offsets[b]

    def live_bytes(self, step: int) -> int:
        """Arena bytes in use at a timeline step (overlapping buffers counted once)."""
        return _live_bytes(self.lifetimes, self.offsets, step)

    def as_dict(self) -> dict:
        return {
            "model": self.graph.name,
            "scheme": self.scheme.as_dict(),
            "reorder": self.reorder,
            "planner": self.planner,
            "train_peak_sram_bytes": self.train_peak_sram_bytes,
            "arena_bytes": self.arena_bytes,
            "static_bytes": self.static_bytes,
            "io_bytes": self.io_bytes,
            "backward_ops": [op.index for op in self.path.ops],
            "saved_tensors": {str(t): k for t, k in sorted(self.path.saved_tensors.items())},
            "grad_tensors": list(self.path.grad_tensors),
            "layers": self.layers,
        }


def _training_lifetimes(g: Graph, scheme: Scheme, path: BackwardPath, reorder: bool, overlaps: bool):
    """The training timeline's buffers and permits, and the maps from tensors/ops to buffers."""
    n = len(g.ops)
    fwd = _Facts.of(g).lifetimes[overlaps]  # shared: copied below, never modified
    bstep = {op.index: n + k for k, op in enumerate(reversed(path.ops))}
    end = n + len(path.ops) - 1
    buffers: list[TrainBuffer] = [
        TrainBuffer(b.id, b.size, b.first, b.last, list(b.tensors), b.scratch_of,
                    role=SCRATCH if b.scratch_of is not None else ACTIVATION,
                    forward_last=None if b.scratch_of is not None else b.last)
        for b in fwd.buffers]
    for t, k in path.saved_tensors.items():
        b = buffers[fwd.tensor_buffer[t]]
        b.last = max(b.last, n + k)
    # A permit lets an output overwrite an input that dies at that op; a saved input no longer
    # dies there, so its bytes must stay intact for the backward pass.
    permits = [p for p in fwd.permits if buffers[p.inp].last == p.op]

    def add(size: int, first: int, last: int, **kw) -> int:
        buffers.append(TrainBuffer(len(buffers), size, first, last, **kw))
        return buffers[-1].id

    grad_buffer: dict[int, int] = {}
    for t in path.grad_tensors:
        # Written (zeroed, then summed into) by the backward step of its first consumer on the
        # path (the latest in graph order; the loss for the logits), read by its producer's.
        producer = g.producer(t)
        readers = [bstep[op.index] for op in path.ops if t in op.inputs]
        born = min(readers, default=bstep[producer.index])
        grad_buffer[t] = add(FLOAT * g.t(t).size, born, bstep[producer.index], tensors=[t], role=GRADIENT)

    bwd_scratch: dict[int, int] = {}
    for op in path.ops:
        if op.index not in scheme.updated_ops():
            continue
        size = backward_scratch_bytes(g, op, scheme, reorder)
        if size > 0:
            # Reordered: used within the op's own step. Otherwise the gradients wait for the update
            # at the end of the backward pass.
            bwd_scratch[op.index] = add(size, bstep[op.index], bstep[op.index] if reorder else end,
                                        role=BWD_SCRATCH, bwd_of=op.index)
    scratch = {b.scratch_of: b.id for b in buffers if b.role == SCRATCH}
    return Lifetimes(buffers, dict(fwd.tensor_buffer), permits), grad_buffer, scratch, bwd_scratch, bstep


def training_lifetimes(g: Graph, scheme: Scheme, reorder: bool = True, overlaps: bool = True) -> Lifetimes:
    """The training timeline's buffers, before placement (the search bounds arenas from them)."""
    return _training_lifetimes(g, scheme, backward_path(g, scheme), reorder, overlaps)[0]


def _place(g: Graph, scheme: Scheme, reorder: bool, planner: str):
    if planner not in PLANNERS:
        raise TinymemError(f"unknown planner '{planner}'; choose one of {', '.join(PLANNERS)}")
    _Facts.of(g)  # validates the graph
    path = backward_path(g, scheme)
    lt, *maps = _training_lifetimes(g, scheme, path, reorder, overlaps=(planner != "greedy"))
    placement = PLANNERS[planner]().place(lt)
    check_placement(lt, placement)
    return path, lt, maps, placement


def io_static_bytes(g: Graph) -> int:
    return CONTROL_BYTES + STATUS_BYTES + g.t(logits_op(g).outputs[0]).nbytes + READY_FLAG_BYTES


def training_arena_bytes(g: Graph, scheme: Scheme, reorder: bool = True, planner: str = "tinymem") -> int:
    """plan_training(...).arena_bytes without the per-layer account (what the search needs)."""
    return _place(g, scheme, reorder, planner)[3].arena_bytes


def plan_training(g: Graph, scheme: Scheme, reorder: bool = True, planner: str = "tinymem") -> TrainPlan:
    """Plan the arena of one training step of `scheme` (see the module docstring)."""
    path, lt, maps, placement = _place(g, scheme, reorder, planner)
    grad_buffer, scratch, bwd_scratch, bstep = maps
    params = param_sram_bytes(g, scheme)
    plan = TrainPlan(graph=g, scheme=scheme, path=path, reorder=reorder, planner=planner, lifetimes=lt,
                     offsets=placement.offsets, arena_bytes=placement.arena_bytes,
                     static_bytes=sum(params.values()), param_bytes=params, tensor_buffer=lt.tensor_buffer,
                     grad_buffer=grad_buffer, scratch_buffer=scratch, bwd_scratch_buffer=bwd_scratch,
                     backward_step=bstep)
    plan.layers = _layers(plan)
    return plan


def _layers(plan: TrainPlan) -> list[dict]:
    """Per op: arena bytes live in its forward step and (on the path) its backward step, bytes of
    its outputs kept for the backward pass, its backward scratch and static parameter bytes."""
    g, lt = plan.graph, plan.lifetimes
    rows = []
    for op in g.ops:
        own = {lt.tensor_buffer[t] for t in op.outputs if t in lt.tensor_buffer}
        step = plan.backward_step.get(op.index)
        bwd = plan.bwd_scratch_buffer.get(op.index)
        rows.append({
            "index": op.index, "op": op.kind,
            "forward_live_bytes": plan.live_bytes(op.index),
            "backward_live_bytes": plan.live_bytes(step) if step is not None else None,
            "saved_bytes": sum(lt.buffers[b].size for b in own if lt.buffers[b].saved),
            "backward_scratch_bytes": lt.buffers[bwd].size if bwd is not None else 0,
            "param_bytes": plan.param_bytes.get(op.index, 0),
            "bias_updated": op.index in plan.scheme.bias_ops,
            "weight_ratio": plan.scheme.weight_ratios.get(op.index, 0.0),
        })
    return rows


# ---------------------------------------------------------------------------------------------
# full back-propagation, the reference the sparse schemes are measured against


def updatable_ops(g: Graph) -> list[Op]:
    """Trainable ops the gradient can reach: those with only back-propagatable ops between them and
    the logits (training stops at the first op without a backward kernel)."""
    out = []
    for op in reversed(trainable_ops(g)):
        try:
            backward_path(g, Scheme(bias_ops=[op.index]))
        except TinymemError:
            break
        out.append(op)
    return out[::-1]


def full_backprop_scheme(g: Graph) -> Scheme:
    ops = updatable_ops(g)
    if not ops:
        raise TinymemError(f"{g.name}: no layer can be trained (no CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED "
                           f"with a back-propagatable path to the logits)")
    return Scheme(bias_ops=[op.index for op in ops], weight_ratios={op.index: 1.0 for op in ops})


def full_backprop_plan(g: Graph, planner: str = "tinymem") -> TrainPlan:
    """Every updatable op, all channels and biases, no operator reordering."""
    return plan_training(g, full_backprop_scheme(g), reorder=False, planner=planner)


def full_backprop_sram_bytes(g: Graph, planner: str = "tinymem") -> int:
    return full_backprop_plan(g, planner).train_peak_sram_bytes


__all__ = ["ACTIVATION", "BWD_SCRATCH", "GRADIENT", "SCRATCH", "TrainBuffer", "TrainPlan", "backward_scratch_bytes",
           "full_backprop_plan", "full_backprop_scheme", "full_backprop_sram_bytes", "op_param_sram_bytes",
           "param_sram_bytes", "plan_training", "training_arena_bytes", "training_lifetimes", "updatable_ops",
           "weights_per_channel"]
