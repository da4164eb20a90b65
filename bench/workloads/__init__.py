"""Benchmark workloads: one module each, with NAME, DESCRIPTION and run(bench)."""
