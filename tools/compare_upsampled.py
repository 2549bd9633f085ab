"""Check that ``geomatch/ops/upsampled.py`` of the working tree gives bit-identical
taps, source descriptors and similarity maps to the version at a git revision
(random inputs, float32 and float64 feature maps).

    PYTHONPATH=$PWD python tools/compare_upsampled.py 37c3de9

The revision's file must import nothing from the package (true before the
taps moved to ``geomatch.ops.resample.bilinear_taps``).
"""
import importlib.util
import itertools
import subprocess
import sys
import tempfile

import numpy as np

from geomatch.ops import upsampled as new

rev = sys.argv[1] if len(sys.argv) > 1 else "37c3de9"
src = subprocess.run(["git", "show", f"{rev}:geomatch/ops/upsampled.py"], check=True,
                     capture_output=True, text=True).stdout
with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
    f.write(src)
spec = importlib.util.spec_from_file_location("old_upsampled", f.name)
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)

n = 0
for n_in, n_out in itertools.product([1, 2, 3, 5, 7, 16, 37, 60], [1, 2, 3, 7, 16, 37, 60, 111, 500, 853]):
    a, b = old.linear_taps(n_in, n_out), new.linear_taps(n_in, n_out)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), (n_in, n_out)
    n += 1
rng = np.random.default_rng(0)
m = 0
for dt in (np.float32, np.float64):
    for t in range(40):
        hs, ws, ht, wt = rng.integers(1, 14, 4)
        D = int(rng.integers(1, 20))
        sf = rng.standard_normal((hs, ws, D)).astype(dt)
        tf = rng.standard_normal((ht, wt, D)).astype(dt)
        if t % 5 == 0:
            tf[rng.integers(ht), :] = 0          # zero-norm target descriptors
        S = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
        T = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
        pt = (rng.uniform(0, S[0]), rng.uniform(0, S[1]))
        for fn in (lambda mod: mod.source_descriptor(sf, pt, S),
                   lambda mod: mod.upsampled_similarity(sf, tf, pt, S, T)):
            x, y = fn(old), fn(new)
            assert x.dtype == y.dtype and np.array_equal(x.view(np.uint64), y.view(np.uint64))
            m += 1
print(f"{n} tap tables and {m} maps/descriptors (float32 and float64 inputs) bit-identical")
