"""Random small int8 CNNs for the patch-based inference tests (tests/test_patch_*.py), written from
the flatbuffer schema like every other test model: chains of CONV_2D (any kernel, stride,
dilation, SAME/VALID), DEPTHWISE_CONV_2D (with multipliers), pools, PAD (asymmetric, channels
too), activations, residual ADDs and MULs by constants, on odd-sized inputs."""
import numpy as np
import pytest

from modelgen import ACT, PADDING, ModelBuilder, options, rand_int8, rand_scale
from tinymem.model.tflite import parse_tflite
from tinymem.ops import validate_graph
from tinymem.ops.conv import out_size_and_pad

UNARY = ["RELU", "RELU6", "LEAKY_RELU", "HARD_SWISH", "LOGISTIC"]


class _Net:
    def __init__(self, rng, h, w, c):
        self.rng, self.m = rng, ModelBuilder()
        self.cur = self._act([1, h, w, c], rand_scale(rng, 0.01, 0.1))
        self.input = self.cur[0]
        self.seen = [self.cur]  # (tensor, shape, scale): candidates for residual ADDs

    def _act(self, shape, scale, zp=None):
        zp = int(self.rng.integers(-128, 128)) if zp is None else zp
        return self.m.act(list(shape), scale, zp), list(shape), scale, zp

    def _push(self, t):
        self.cur = t
        self.seen.append(t)

    def conv(self, depthwise=False, k=None, stride=None, out_c=None, act=None):
        """Random geometry unless given (k: (kh, kw), stride: (sh, sw); given ones use SAME padding)."""
        rng, (x, shape, s_in, _) = self.rng, self.cur
        _, h, w, c = shape
        kh, kw = k or [(1, 1), (3, 3), (3, 3), (5, 5), (1, 3), (3, 2), (2, 4)][int(rng.integers(7))]
        if stride is None:
            stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if rng.random() < 0.5 else (1, 1)
        dil = (1, 1) if k is not None or rng.random() < 0.7 or stride != (1, 1) else \
            (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        valid_ok = h >= (kh - 1) * dil[0] + 1 and w >= (kw - 1) * dil[1] + 1
        padding = "VALID" if k is None and valid_ok and rng.random() < 0.3 else "SAME"
        oh, _ = out_size_and_pad(PADDING[padding], h, kh, stride[0], dil[0])
        ow, _ = out_size_and_pad(PADDING[padding], w, kw, stride[1], dil[1])
        if oh < 2 or ow < 2:
            stride, padding = (1, 1), "SAME"
            oh, ow = h, w
        if out_c is None:
            out_c = c * int(rng.integers(1, 3)) if depthwise else int(rng.integers(1, 9))
        f_shape = [1, kh, kw, out_c] if depthwise else [out_c, kh, kw, c]
        w_scale = np.array([rand_scale(rng, 1e-3, 2e-2) for _ in range(out_c)])
        f = self.m.tensor(f_shape, "int8", w_scale, np.zeros(out_c, int), rand_int8(rng, f_shape), axis=3 if depthwise else 0)
        b = self.m.tensor([out_c], "int32", w_scale * s_in, np.zeros(out_c, int),
                          rng.integers(-20000, 20000, out_c).astype(np.int32))
        taps = kh * kw * (1 if depthwise else c)
        y = self._act([1, oh, ow, out_c], s_in * float(w_scale.mean()) * 74 * 74 * np.sqrt(taps) / 50 * rand_scale(rng, 0.5, 2))
        common = dict(padding=PADDING[padding], strideH=stride[0], strideW=stride[1], dilationHFactor=dil[0],
                      dilationWFactor=dil[1],
                      fusedActivationFunction=ACT[act or ["NONE", "RELU", "RELU6"][int(rng.integers(3))]])
        if depthwise:
            self.m.op("DEPTHWISE_CONV_2D", [x, f, b], [y[0]], options("DepthwiseConv2DOptions", depthMultiplier=out_c // c, **common))
        else:
            self.m.op("CONV_2D", [x, f, b], [y[0]], options("Conv2DOptions", **common))
        self._push(y)

    def pool(self):
        rng, (x, shape, s, zp) = self.rng, self.cur
        _, h, w, c = shape
        fh, fw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        padding = "VALID" if h >= fh and w >= fw and rng.random() < 0.4 else "SAME"
        oh, ow = ((-(-h // sh), -(-w // sw)) if padding == "SAME" else ((h - fh) // sh + 1, (w - fw) // sw + 1))
        if oh < 2 or ow < 2:
            return self.unary()
        kind = ["AVERAGE_POOL_2D", "MAX_POOL_2D"][int(rng.integers(2))]
        y = self._act([1, oh, ow, c], s, zp)
        self.m.op(kind, [x], [y[0]], options("Pool2DOptions", padding=PADDING[padding], strideH=sh, strideW=sw,
                                              filterHeight=fh, filterWidth=fw, fusedActivationFunction=0))
        self._push(y)

    def pad(self):
        rng, (x, shape, s, zp) = self.rng, self.cur
        pads = [[0, 0]] + [[int(rng.integers(0, 3)), int(rng.integers(0, 3))] for _ in range(2)] + \
               [[int(rng.integers(0, 2)), int(rng.integers(0, 2))] if rng.random() < 0.3 else [0, 0]]
        p = self.m.tensor([4, 2], "int32", data=np.array(pads, np.int32))
        y = self._act([n + a + b for n, (a, b) in zip(shape, pads)], s, zp)
        self.m.op("PAD", [x, p], [y[0]], options("PadOptions"))
        self._push(y)

    def unary(self):
        rng, (x, shape, s, _) = self.rng, self.cur
        kind = UNARY[int(rng.integers(len(UNARY)))]
        if kind == "LOGISTIC":
            y = self._act(shape, 1 / 256, -128)
        elif kind == "HARD_SWISH":
            y = self._act(shape, rand_scale(rng, s / 50, s * 2))
        else:
            y = self._act(shape, rand_scale(rng, s / 3, s * 3))
        opts = options("LeakyReluOptions", alpha=float(rng.uniform(-0.5, 0.5))) if kind == "LEAKY_RELU" else None
        self.m.op(kind, [x], [y[0]], opts)
        self._push(y)

    def add(self):
        rng, (x, shape, s, _) = self.rng, self.cur
        same = [t for t in self.seen[:-1] if t[1] == shape]
        if not same:
            return self.conv()
        other = same[int(rng.integers(len(same)))]
        y = self._act(shape, max(s, other[2]) * rand_scale(rng, 0.7, 3))
        self.m.op("ADD", [x, other[0]], [y[0]], options("AddOptions", fusedActivationFunction=ACT[["NONE", "RELU"][int(rng.integers(2))]]))
        self._push(y)

    def mul_const(self):
        rng, (x, shape, s, _) = self.rng, self.cur
        c = shape[3]
        bs = rand_scale(rng, 0.005, 0.05)
        b = self.m.tensor([c], "int8", bs, int(rng.integers(-20, 20)), rand_int8(rng, (c,)))
        y = self._act(shape, s * bs * rand_scale(rng, 20, 200))
        self.m.op("MUL", [x, b], [y[0]], options("MulOptions", fusedActivationFunction=0))
        self._push(y)

    def add_to(self, other):
        rng, (x, shape, s, _) = self.rng, self.cur
        y = self._act(shape, max(s, other[2]) * rand_scale(rng, 0.7, 1.5))
        self.m.op("ADD", [x, other[0]], [y[0]], options("AddOptions", fusedActivationFunction=0))
        self._push(y)

    def inverted_residual(self, expand, out_c, stride):
        start = self.cur
        c = start[1][3]
        if expand > 1:
            self.conv(k=(1, 1), stride=(1, 1), out_c=c * expand, act="RELU6")
        self.conv(depthwise=True, k=(3, 3), stride=(stride, stride), out_c=self.cur[1][3], act="RELU6")
        self.conv(k=(1, 1), stride=(1, 1), out_c=out_c, act="NONE")
        if stride == 1 and c == out_c:
            self.add_to(start)

    def build(self) -> bytes:
        return self.m.build([self.input], [self.cur[0]])


def random_cnn(rng, n_ops: int | None = None, size: tuple[int, int] | None = None) -> bytes:
    """A random chain (with residual ADDs) of `n_ops` patchable ops on an odd-sized input."""
    h, w = size or (int(rng.integers(7, 25)), int(rng.integers(7, 25)))
    net = _Net(rng, h, w, int(rng.integers(1, 5)))
    net.conv()
    kinds = [net.conv, net.conv, lambda: net.conv(depthwise=True), lambda: net.conv(depthwise=True), net.pool, net.pad,
             net.unary, net.add, net.add, net.mul_const]
    for _ in range((n_ops or int(rng.integers(3, 9))) - 1):
        kinds[int(rng.integers(len(kinds)))]()
    return net.build()


def mobilenet_like(size: int, seed: int = 0) -> bytes:
    """MobileNetV2 alpha 0.5's first blocks at size x size (random weights), then global average
    pooling and a 1x1 classifier: its 2x-upsampled stem makes the layer-wise peak large."""
    net = _Net(np.random.default_rng(seed), size, size, 3)
    net.conv(k=(3, 3), stride=(2, 2), out_c=16, act="RELU6")
    net.inverted_residual(1, 8, 1)
    for expand, out_c, stride in ((6, 16, 2), (6, 16, 1), (6, 16, 2), (6, 16, 1), (6, 16, 1), (6, 24, 2), (6, 24, 1)):
        net.inverted_residual(expand, out_c, stride)
    net.conv(k=(1, 1), stride=(1, 1), out_c=64, act="RELU6")
    _, h, w, c = net.cur[1]
    y = net._act([1, 1, 1, c], net.cur[2], net.cur[3])
    net.m.op("AVERAGE_POOL_2D", [net.cur[0]], [y[0]], options("Pool2DOptions", padding=PADDING["VALID"], strideH=1,
                                                                strideW=1, filterHeight=h, filterWidth=w))
    net._push(y)
    net.conv(k=(1, 1), stride=(1, 1), out_c=10, act="NONE")
    return net.build()


@pytest.mark.parametrize("seed", range(4))
def test_random_cnn_is_valid(seed):
    g = parse_tflite(random_cnn(np.random.default_rng(seed)), "random")
    validate_graph(g)
    assert len(g.ops) >= 3
