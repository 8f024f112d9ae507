import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import assert_bit_exact  # noqa: E402,F401


@pytest.fixture
def rng(request):
    import numpy as np
    # Stable per test: a failure reproduces with the same seed.
    return np.random.default_rng(abs(hash(request.node.nodeid)) % (2**32))
