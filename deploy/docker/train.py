"""A stand-in training script for the deployment examples: metrics, a file, console lines.

Run it as a user would, under the launcher, with the agent sidecar's socket
in ``MLTRAIL_AGENT``:

    mltrail run --experiment demo -- python train.py --steps 100

The image carries it as /opt/mltrail/examples/train.py.

It logs ``loss`` and ``accuracy`` per step, prints a line per step (the
console), and uploads ``outputs/model.txt`` at the end. Only the standard
library and mltrail, so it runs in the mltrail image as it is.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from mltrail import Run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per step")
    args = parser.parse_args()
    run = Run.get_context()
    run.log("learning_rate", 0.01)
    for step in range(1, args.steps + 1):
        loss = 2.0 * math.exp(-step / 30.0)
        run.log("loss", loss, step=step)
        run.log("accuracy", 1.0 - loss / 2.0, step=step)
        print(f"step {step}/{args.steps} loss={loss:.4f}", flush=True)
        time.sleep(args.delay)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.txt"
        model.write_text(f"weights after {args.steps} steps\n")
        run.upload_file("outputs/model.txt", str(model))
    print("training done", flush=True)


if __name__ == "__main__":
    main()
