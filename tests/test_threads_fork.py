"""Threads are process-wide, and kernels work in a child made by fork.

The risky cases (a hang at an OpenMP barrier) run in a subprocess with a
timeout, so a regression fails the test instead of hanging the suite."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import geomatch as gm

# The parent uses the kernels with 2 OpenMP threads at realistic sizes, then
# the same calls run in a child made by multiprocessing's fork start method;
# the child must finish, on one thread, with bit-identical results.
FORK_SCRIPT = textwrap.dedent("""
    import multiprocessing as mp
    import numpy as np
    import geomatch as gm

    gm.set_num_threads(2)
    r = np.random.default_rng(0)
    f = r.random((37, 37, 64)).astype(np.float32)
    kp = np.array([[10.0, 10.0], [200.0, 300.0]])
    S = (r.random((900, 900)) * 2 - 1).astype(np.float32)
    mu = np.full(901, 1 / 901, np.float32)
    G = r.standard_normal((901, 901)).astype(np.float32)
    C = r.random((600, 600)).astype(np.float32)
    a = np.full(600, 1 / 600, np.float32)

    def run():
        return (gm.transfer_keypoints(f, f, kp, (500, 375), (500, 375)),
                gm.transfer_keypoints(f, f, kp, (500, 375), (500, 375), mode="soft-argmax"),
                gm.dustbin_sinkhorn(S, mu, mu),
                gm.dustbin_sinkhorn_vjp(S, mu, mu, G),
                gm.sinkhorn(C, a, a, 0.05, max_iter=20, tol=0),
                gm.cosine_similarity(f.reshape(-1, 64), f.reshape(-1, 64)))

    ref = run()

    def child(q):
        out = run()
        q.put((gm.get_num_threads(), [np.array_equal(x, y) for x, y in zip(out, ref)]))

    if __name__ == "__main__":
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        nt, same = q.get(timeout=100)
        p.join(20)
        print("RESULT", nt, all(same), p.exitcode)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs the fork start method")
def test_kernels_run_in_a_forked_child_after_the_parent_used_openmp(tmp_path):
    script = tmp_path / "fork_child.py"
    script.write_text(FORK_SCRIPT)
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=150)
    except subprocess.TimeoutExpired:
        pytest.fail("a kernel hung in a forked child (OpenMP barrier after fork)")
    assert proc.returncode == 0, proc.stderr
    # the child ran single-threaded, with the parent's results, and exited 0
    assert "RESULT 1 True 0" in proc.stdout, proc.stdout + proc.stderr


def test_set_num_threads_applies_to_every_python_thread():
    before = gm.get_num_threads()
    seen = {}

    def worker():
        seen["threads"] = gm.get_num_threads()
        gm.set_num_threads(2)

    try:
        gm.set_num_threads(1)
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        # set in the main thread, seen by the other one ...
        assert seen["threads"] == 1
        # ... and set there, seen here
        assert gm.get_num_threads() == 2
    finally:
        gm.set_num_threads(before)


def test_results_from_another_thread_match_the_main_thread():
    r = np.random.default_rng(3)
    S = (r.random((500, 400)) * 2 - 1).astype(np.float32)
    mu = np.full(501, 1 / 501, np.float32)
    nu = np.full(401, 1 / 401, np.float32)
    before = gm.get_num_threads()
    out = {}
    try:
        gm.set_num_threads(1)
        ref = gm.dustbin_sinkhorn(S, mu, nu)
        t = threading.Thread(target=lambda: out.update(P=gm.dustbin_sinkhorn(S, mu, nu)))
        t.start()
        t.join()
    finally:
        gm.set_num_threads(before)
    np.testing.assert_array_equal(out["P"], ref)


def test_thread_count_above_the_limit_is_refused():
    with pytest.raises(ValueError, match="n must be between 1 and 4096"):
        gm.set_num_threads(4097)
