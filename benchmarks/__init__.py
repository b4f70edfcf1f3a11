"""Speed and memory measurements; run with `python -m benchmarks`."""
