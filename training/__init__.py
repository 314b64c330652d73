"""Offline training of the CNN ranking head; not part of the service.

- ``data``: the one list of images the head is trained on (and the held-out split).
- ``augment``: the copy attacks that make training views (also used by the benchmarks).
- ``train``: ``python -m training.train --seed 0`` writes ``matching/core/cnn/weights/head.npz``
  and ``docs/training/report.md``.
- ``make_reference``: the PyTorch reference outputs the backbone's port is tested against
  (run once, in a throwaway environment with torch).

Imports the engine (``matching.core``); nothing in the service imports this package.
"""
