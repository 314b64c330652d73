"""Copy-detection benchmark and threshold calibration.

- ``attacks``: the canonical attacks (resize, JPEG, crops, rotations, overlays,
  paste into a photo, collage...), deterministic given a seed.
- ``dataset``: the seeded split of ``../shared/datasets`` into references and
  unrelated images; attacked copies are made in memory.
- ``systems``: the ``System`` / ``Hit`` interface the service's matcher plugs
  into (``bench.service.benchmark_system()``), and the baselines.
- ``metrics``, ``report``, ``run``: scoring, the markdown/PNG/JSON report, the CLI.
- ``chains``, ``suites``: chained edits and marks composited into photos,
  ``python -m bench.run --suite chains|marks`` (held-out images only).
- ``calibrate``: thresholds per score component at a target false-positive rate.

    python -m bench.run --out docs/
    python -m bench.calibrate --raw docs/benchmark-raw.json.gz --fpr 0.005

Plain Python (no Django); Pillow and numpy at import, everything heavier on use.
"""
