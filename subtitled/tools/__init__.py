"""Tooling beside the product: measuring it, not running it.

- `bench/`: `subtitled bench`, `bench-translate`, `bench-startup` (accuracy, latency,
  cost, start-up, against whole-clip decoding and re-prefilling baselines).
- `soak`: `subtitled soak`, an endurance run of the daemon with many clients;
  `soak_report` judges its samples (memory growth, latency drift, delivery).

The daemon never imports these; they import the product.
"""
