"""benchmark_bulk --n 2000: Spark local[2] versus in-process indexing, images/s per core (docs/scaling.md)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from django.core.management.base import BaseCommand

from matching.bulk import bench


class Command(BaseCommand):
    help = "Index N augmented dataset images through Spark and in-process; print images/s per core."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--n", type=int, default=2000, help="images to build and index (default 2000)")
        parser.add_argument("--spark-master", default="local[2]")
        parser.add_argument("--cnn", action=argparse.BooleanOptionalAction, default=None,
                            help="also measure with the CNN embedding (default: when the embedder loads)")
        parser.add_argument("--dataset", type=Path, default=bench.DATASETS)
        parser.add_argument("--json", type=Path, help="also write the figures here")
        parser.add_argument("--keep", action="store_true", help="keep the temporary images")

    def handle(self, *args, **opts):  # type: ignore[no-untyped-def]
        report = bench.run(n=opts["n"], master=opts["spark_master"], cnn=opts["cnn"], dataset=opts["dataset"],
                           keep=opts["keep"])
        self.stdout.write(bench.table(report))
        for note in report["notes"]:
            self.stdout.write(f"note: {note}")
        self.stdout.write(f"note: {report['cpu_count']} CPUs, load average {report['load_average'][0]:.2f} at the end")
        if opts["json"]:
            opts["json"].write_text(json.dumps(bench.as_json(report), indent=2))
