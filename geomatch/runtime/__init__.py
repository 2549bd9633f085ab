"""Process-level runtime: build configuration, BLAS preloading, threads, memory,
progress bars, and the runtime/memory profile of the pipeline (:mod:`.profile`)."""
