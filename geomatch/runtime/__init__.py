"""Process-level runtime: build configuration, BLAS preloading, threads, memory, progress bars."""
