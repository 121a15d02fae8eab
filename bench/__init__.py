"""Benchmarks: ``python -m bench`` runs them all (training, then decoding); results go to bench/results/.

- ``python -m bench.train_bench``: training throughput against a naive port, and held-out bits per
  character against training time for both objectives.
- ``python -m bench.decode_bench``: decode speed through the server against the reference loop.
"""
