"""Side-by-side benchmarks of the trainer against PyTorch and of the operator; `python -m bench.run_all`."""
