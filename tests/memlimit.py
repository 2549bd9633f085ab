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
    r = subprocess.run([sys.executable, "-c", _CODE, reader, str(path), str(limit)],
                       capture_output=True, text=True, timeout=timeout, env=env)
    return r.stdout + r.stderr
