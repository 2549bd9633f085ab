"""Run a reader on a file in a subprocess with a capped address space, so a
huge allocation fails there (MemoryError) instead of exhausting the machine."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CODE = textwrap.dedent("""
    import importlib, resource, sys
    limit = int(sys.argv[3])
    if limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    module, name = sys.argv[1].rsplit(".", 1)
    reader = getattr(importlib.import_module(module), name)
    try:
        reader(sys.argv[2])
    except ValueError as exc:
        print("VALUEERROR", exc)
    except MemoryError:
        print("MEMORYERROR")
    else:
        print("ACCEPTED")
""")


def read_with_memory_limit(reader: str, path, limit: int = 3 << 30, timeout: int = 120) -> str:
    """stdout + stderr of ``reader(path)`` (``reader`` a dotted name) run in a
    subprocess limited to ``limit`` bytes of address space: ``VALUEERROR
    <message>``, ``MEMORYERROR`` or ``ACCEPTED``."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    if "libasan" in env.get("LD_PRELOAD", ""):
        # AddressSanitizer reserves terabytes of address space for its shadow
        # memory, so an address-space limit kills it at start; its allocator
        # enforces the same cap instead (a larger request returns NULL, which
        # NumPy reports as MemoryError).
        opts = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = ":".join(filter(None, [
            opts, f"max_allocation_size_mb={limit >> 20}", "allocator_may_return_null=1"]))
        limit = 0
    r = subprocess.run([sys.executable, "-c", _CODE, reader, str(path), str(limit)],
                       capture_output=True, text=True, timeout=timeout, env=env)
    return r.stdout + r.stderr
