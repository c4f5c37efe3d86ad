"""Measuring tools for the benchmarks and their tests, kept out of the ``wgangp`` package:
:mod:`scripts.benchtools.kernels` (the compute-bound kernels of a step, replayed alone)
and :mod:`scripts.benchtools.memory` (live-tensor bytes on any device)."""
