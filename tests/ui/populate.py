"""Runs for the web UI tests and benchmarks, logged through the real SDK.

``python -m tests.ui.populate OUT.json`` (with MLTRAIL_AGENT set) logs the
runs below and writes what it logged (ids, first and last points, extremes)
to OUT.json, so tests compare the page with what was sent, not with the store.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from mltrail import Experiment, LogHandler

CONFUSION = {"schema_type": "confusion_matrix", "schema_version": "1.0.0",
             "data": {"class_labels": ["cat", "dog"], "matrix": [[41, 3], [5, 38]]}}
ACCURACY = {"schema_type": "accuracy_table", "schema_version": "1.0.2",
            "data": {"probability_tables": [[[10, 8, 0, 0], [8, 2, 6, 2], [0, 0, 8, 10]],
                                            [[10, 8, 0, 0], [9, 1, 7, 1], [0, 0, 8, 10]]],
                     "percentile_tables": [], "class_labels": ["cat", "dog"],
                     "probability_thresholds": [0.0, 0.5, 1.0], "percentile_thresholds": []}}
RESIDUALS = {"schema_type": "residuals", "schema_version": "1.0.0",
             "data": {"bin_edges": [-1, -0.5, 0, 0.5, 1], "bin_counts": [3, 11, 14, 4]}}
PREDICTIONS = {"schema_type": "predictions", "schema_version": "1.0.0",
               "data": {"bin_averages": [0.1, 0.45, 0.9], "bin_errors": [0.02, 0.05, 0.03],
                        "bin_counts": [12, 30, 9], "bin_edges": [0, 0.33, 0.66, 1]}}
LONG = 50_000  # points in "long_loss": over the chart's buckets, so it is downsampled
SPIKE_AT = 31_337


def main(out: Path) -> None:
    work = out.parent
    experiment = Experiment("ui-vision")
    runs = {}
    for name, lr, good in (("baseline", 0.1, False), ("tuned", 0.01, True)):
        run = experiment.start_logging(display_name=name, tags={"team": "vision", "lr": str(lr)})
        run.add_properties({"framework": "numpy", "seed": "7" if good else "3"})
        losses = [1.0 / (1 + step * (0.05 if good else 0.02)) for step in range(300)]
        for step, loss in enumerate(losses):
            run.log("loss", loss, step=step)
            run.log("accuracy", 1 - loss / 2, step=step)
        run.log("learning_rate", lr)
        run.log_list("class_counts", [178, 182, 177])
        run.log_row("epochs", epoch=0, loss=0.9, accuracy=0.6)
        run.log_row("epochs", epoch=1, loss=0.5, accuracy=0.8)
        run.log_table("per_class", {"digit": [0, 1, 2], "accuracy": [0.99, 0.97, 0.95]})
        figure, axes = plt.subplots(figsize=(3, 2))
        axes.plot(losses)
        run.log_image("loss_curve", plot=figure)
        plt.close(figure)
        run.log_confusion_matrix("confusion", CONFUSION)
        run.log_accuracy_table("accuracy_table", ACCURACY)
        run.log_residuals("residuals", RESIDUALS)
        run.log_predictions("predictions", PREDICTIONS)
        model = work / f"model-{name}.bin"
        model.write_bytes(bytes(range(256)) * (40 + (7 if good else 0)))
        run.upload_file("outputs/model.bin", str(model))
        child = run.child_run(name=f"{name}-fold-1")
        child.log("accuracy", 0.9 if good else 0.7)
        child.complete()
        handler = LogHandler(run)
        logger = logging.getLogger(f"ui.{name}")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        for epoch in range(120):
            logger.info("epoch %d of %s: loss %.4f", epoch, name, losses[epoch])
        logger.warning("done with %s", name)
        logger.removeHandler(handler)
        runs[name] = {"run_id": run.id, "loss_first": losses[0], "loss_last": losses[-1],
                      "accuracy_last": 1 - losses[-1] / 2, "child": child.id,
                      "model_sha256": __import__("hashlib").sha256(model.read_bytes()).hexdigest()}
        run.complete()
    long_run = Experiment("ui-long").start_logging(display_name="long")
    values = [math.sin(i / 500.0) for i in range(LONG)]
    values[SPIKE_AT] = 25.0
    for step, value in enumerate(values):
        long_run.log("long_loss", value, step=step)
    for odd in (float("nan"), float("inf"), 1.5, -float("inf")):
        long_run.log("odd", odd)
    long_run.complete()
    failed = Experiment("ui-vision").start_logging(display_name="broken", tags={"team": "audio"})
    failed.log("loss", 3.0)
    failed.fail(error_details=ValueError("bad data in shard 3"))
    runs["long"] = {"run_id": long_run.id, "first": values[0], "last": values[-1],
                    "max": 25.0, "count": LONG}
    runs["failed"] = {"run_id": failed.id}
    out.write_text(json.dumps(runs))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
