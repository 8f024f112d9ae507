"""A resistive-memory liquid state machine (after Lin et al., "Resistive memory-based zero-shot
liquid state machine for multimodal event data learning", arXiv 2307.00771): a fixed, random
reservoir of LIF neurons encodes event-camera data on the microcontroller; only a small readout is
trained, on the host.

    device.py     RRAM conductances → random signed weights (d2d, c2c, levels, stuck cells, pairs)
    reservoir.py  the LIF reservoir in numpy, float and fixed point (the fixed point is the spec)
    events.py     the .npz event format, a saccade (N-MNIST-style) simulator, binning to frames
    codegen.py    the reservoir as C from codegen/templates/lsm/ (weights in flash or from the seed)
    encode.py     encode on numpy / host C / a board over the UART; the encodings file
    readout.py    softmax / ANN readouts, cross-validation, contrastive (zero-shot) projections
    plot.py       the raster picture of one sample
The CLI is `tinymem lsm ...` (tinymem/cli_lsm.py).
"""
