"""A small, real training run, logged the way an Azure ML v1 script logs.

A multi-layer perceptron learns scikit-learn's bundled handwritten digits
(no download) for a few epochs. Run it under the launcher so its console is
captured too:

    mltrail run --experiment digits -- python examples/train.py --epochs 15

The only change from an Azure ML v1 script is the import line.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from mltrail import LogHandler, Run  # was: from azureml.core import Run

log = logging.getLogger("train")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args()


def confusion_matrix_v1(labels: list[int], matrix: np.ndarray) -> dict[str, object]:
    """The Azure ML v1 JSON schema that log_confusion_matrix takes."""
    return {
        "schema_type": "confusion_matrix",
        "schema_version": "1.0.0",
        "data": {"class_labels": [str(c) for c in labels], "matrix": matrix.tolist()},
    }


def loss_curve_figure(losses: list[float], accuracies: list[float]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(losses, label="validation loss")
    ax.plot(accuracies, label="validation accuracy")
    ax.set_xlabel("epoch")
    ax.legend()
    fig.tight_layout()
    return fig


def main() -> None:
    args = parse_args()
    run = Run.get_context()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger().addHandler(LogHandler(run))

    run.set_tags({"model": "mlp", "dataset": "sklearn-digits"})
    run.tag("hidden", str(args.hidden))
    run.add_properties({"seed": str(args.seed)})
    run.log("learning_rate", args.learning_rate)

    digits = load_digits()
    x = digits.data / 16.0
    x_train, x_val, y_train, y_val = train_test_split(
        x, digits.target, test_size=0.25, random_state=args.seed, stratify=digits.target
    )
    classes = sorted(set(digits.target.tolist()))
    run.log_list("class_counts", [int((y_train == c).sum()) for c in classes])
    print(f"training on {len(x_train)} images, validating on {len(x_val)}", flush=True)

    model = MLPClassifier(
        hidden_layer_sizes=(args.hidden,),
        learning_rate_init=args.learning_rate,
        random_state=args.seed,
    )
    losses: list[float] = []
    accuracies: list[float] = []
    for epoch in range(args.epochs):
        started = time.perf_counter()
        for batch in np.array_split(np.arange(len(x_train)), 10):
            model.partial_fit(x_train[batch], y_train[batch], classes=classes)
        proba = model.predict_proba(x_val)
        loss = float(log_loss(y_val, proba, labels=classes))
        accuracy = float(accuracy_score(y_val, proba.argmax(axis=1)))
        losses.append(loss)
        accuracies.append(accuracy)
        run.log("loss", loss, step=epoch)
        run.log("accuracy", accuracy, step=epoch)
        run.log_row("epochs", epoch=epoch, loss=loss, accuracy=accuracy,
                    seconds=round(time.perf_counter() - started, 4))
        print(f"epoch {epoch:3d}  loss {loss:.4f}  accuracy {accuracy:.4f}", flush=True)
        log.info("epoch %d done", epoch)

    predictions = model.predict(x_val)
    matrix = confusion_matrix(y_val, predictions, labels=classes)
    run.log_confusion_matrix("confusion_matrix", confusion_matrix_v1(classes, matrix))
    per_class = [float(matrix[i, i] / max(matrix[i].sum(), 1)) for i in range(len(classes))]
    run.log_table("per_class_accuracy", {"digit": classes, "accuracy": per_class})
    run.log_image("learning_curve", plot=loss_curve_figure(losses, accuracies))
    run.log("final_accuracy", accuracies[-1])

    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.pkl"
        model_path.write_bytes(pickle.dumps(model))
        run.upload_file("outputs/model.pkl", str(model_path))
    log.info("training finished: accuracy %.4f", accuracies[-1])
    print(f"final accuracy {accuracies[-1]:.4f}", flush=True)
    # No run.complete(): under `mltrail run` (as under Azure ML) the launcher
    # ends the run from the exit code, after the SDK flushed at exit.


if __name__ == "__main__":
    main()
