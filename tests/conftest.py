import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import assert_bit_exact  # noqa: E402,F401


@pytest.fixture
def rng(request):
    import zlib

    import numpy as np
    # Stable per test and across processes (str hash() is salted): a failure reproduces.
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
