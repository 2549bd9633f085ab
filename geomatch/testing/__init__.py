"""Helpers shared by geomatch's tests and benchmarks (not used by the library).

:mod:`geomatch.testing.reference`
    Slow, plain-NumPy float64 references written from the equations of
    ``docs/method.md`` -- the oracles the tests compare the C kernels against
    and the "literal" peers the benchmarks time.  They import nothing from
    geomatch, so they stay independent of the code under test.
:mod:`geomatch.testing.timing`
    Timing helpers of the benchmarks (medians, best-of, CPU time, Markdown
    tables).  Nothing there asserts on time.

Shipped inside the package (as Bottleneck ships ``bottleneck.slow``) so the
benchmarks run against an installed geomatch from any folder.
"""
