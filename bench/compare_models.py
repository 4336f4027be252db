"""Compare trained models side by side on the same split: one report with figures.

    python3 -m bench.compare_models data/pneumonia models/resnet18 models/compact --output reports/compare
    python3 -m bench.compare_models data/pneumonia models/compact --recipe "models/compact=--arch compact_cnn --epochs 5"

An orchestrator over every stage (train, export, the device runner), so it lives with the
benchmarks. For every model dir: the metric registry's metrics at the model's own threshold, its confusion matrix, parameter count, ONNX size, and the CPU latency of one
image through the device runner (ONNX Runtime, batch 1, median); plus one figure with every ROC
curve. A dir named in --recipe and holding no model_best.pth.tar is trained first with those
train.py arguments, and a model without an ONNX is exported first.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from cxr_jetson.core.cli import run_cli  # noqa: E402
from cxr_jetson.core.errors import ToolkitError  # noqa: E402
from cxr_jetson.core.metric_registry import METRICS, format_with_interval  # noqa: E402
from cxr_jetson.core.names import BEST_CHECKPOINT  # noqa: E402
from cxr_jetson.edge.backends import BackendOptions  # noqa: E402
from cxr_jetson.edge.benchmark import latencies_ms  # noqa: E402
from cxr_jetson.edge.deployed_model import DeployedModel  # noqa: E402
from cxr_jetson.export.onnx_export import ExportOptions, export_onnx  # noqa: E402
from cxr_jetson.networks.checkpoint import load_checkpoint  # noqa: E402
from cxr_jetson.networks.model import model_from_checkpoint  # noqa: E402
from cxr_jetson.train.evaluate import Evaluation, evaluate_model_dir  # noqa: E402
from cxr_jetson.train.hardware import select_device  # noqa: E402
from cxr_jetson.train.report import plot_confusion, write_json  # noqa: E402


def _parse_recipes(recipes: List[str]) -> Dict[str, List[str]]:
    parsed = {}
    for recipe in recipes:
        folder, separator, arguments = recipe.partition("=")
        if not separator:
            raise ToolkitError(f"--recipe {recipe!r}: write MODEL_DIR=TRAIN_ARGUMENTS")
        parsed[os.path.normpath(folder)] = shlex.split(arguments)
    return parsed


def _ensure_trained(model_dir: str, data: str, recipe: List[str]) -> None:
    if os.path.isfile(os.path.join(model_dir, BEST_CHECKPOINT)):
        return
    if recipe is None:
        raise ToolkitError(f"{model_dir} holds no {BEST_CHECKPOINT}; train it first or give --recipe {model_dir}=ARGUMENTS")
    from cxr_jetson.train.args import get_args_parser
    from cxr_jetson.train.main import main as train_main
    print(f"== training {model_dir}: train.py {' '.join(recipe)}")
    train_main(get_args_parser().parse_args([data, "--model-dir", model_dir, *recipe]))


def _ensure_onnx(model_dir: str) -> str:
    arch = load_checkpoint(os.path.join(model_dir, BEST_CHECKPOINT))["arch"]
    path = os.path.join(model_dir, f"{arch}.onnx")
    return path if os.path.isfile(path) else export_onnx(ExportOptions(model_dir=model_dir))


def _latency_ms(onnx_path: str, runs: int) -> float:
    """Median ms of one preprocessed image through the device runner's ONNX Runtime back-end."""
    model = DeployedModel(onnx_path, "onnxruntime", options=BackendOptions())
    image = np.random.default_rng(0).integers(0, 256, (1, model.spec.resolution, model.spec.resolution), np.uint8)
    return float(np.median(latencies_ms(lambda: model.run(image), runs, warm_up=5)))


def _roc_figure(evaluations: Dict[str, Evaluation], split: str, path: str) -> None:
    figure, axis = plt.subplots(figsize=(5.5, 5.5))
    for name, evaluation in evaluations.items():
        if evaluation.positive is None:
            continue
        targets = (evaluation.targets == evaluation.positive).astype(int)
        fpr, tpr, _ = roc_curve(targets, evaluation.probabilities[:, evaluation.positive])
        line, = axis.plot(fpr, tpr, label=f"{name} (AUC {evaluation.metrics['auc']:.4f})")
        axis.plot(1 - evaluation.metrics["specificity"], evaluation.metrics["sensitivity"], "o",
                  color=line.get_color())
    axis.plot([0, 1], [0, 1], color="lightgrey", linestyle="--")
    axis.set(title=f"ROC on {split} (dots: each model's threshold)", xlabel="1 - specificity",
             ylabel="sensitivity", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _report(rows: List[Dict], split: str, data: str, command: str) -> str:
    lines = [f"# Model comparison on `{data}` / {split}", "", f"Made by `{command}`.", "",
             "| model | arch | input | " + " | ".join(m.label for m in METRICS)
             + " | threshold | parameters | ONNX MB | CPU ms/image |",
             "|---" * (len(METRICS) + 7) + "|"]
    for row in rows:
        metrics = row["metrics"]
        values = " | ".join(format_with_interval(metrics, m.key) for m in METRICS)
        threshold = f"{row['threshold']:.4f}" if row["threshold"] is not None else "argmax"
        lines.append(f"| {row['name']} | {row['arch']} | {row['resolution']} | {values} | {threshold} | "
                     f"{row['parameters']:,} | {row['onnx_mb']:.1f} | {row['latency_ms']:.2f} |")
    lines += ["", "![ROC curves](roc_overlay.png)", "", "| " + " | ".join(r["name"] for r in rows) + " |",
              "|---" * len(rows) + "|", "| " + " | ".join(f"![{r['name']}]({r['confusion']})" for r in rows) + " |",
              "", "Recipes (train.py arguments) and training histories are in each model dir's MODEL_CARD.md "
              "and history.csv. Brackets: 95% confidence intervals (exact binomial; the AUC's a bootstrap over "
              "patients). Latency: ONNX Runtime on this machine's CPU, batch 1, median of 50 runs, "
              "preprocessing excluded.", ""]
    return "\n".join(lines)


def compare(args: argparse.Namespace, command: str) -> str:
    recipes = _parse_recipes(args.recipe)
    os.makedirs(args.output, exist_ok=True)
    device = select_device(args.device)
    evaluations: Dict[str, Evaluation] = {}
    rows = []
    for model_dir in args.model_dirs:
        name = os.path.basename(os.path.normpath(model_dir))
        _ensure_trained(model_dir, args.data, recipes.get(os.path.normpath(model_dir)))
        checkpoint = load_checkpoint(os.path.join(model_dir, BEST_CHECKPOINT))
        evaluation = evaluate_model_dir(model_dir, args.data, args.split, device, args.batch_size, args.workers)
        evaluations[name] = evaluation
        onnx_path = _ensure_onnx(model_dir)
        confusion = f"confusion_{name}.png"
        plot_confusion(evaluation.matrix, evaluation.classes, name, os.path.join(args.output, confusion))
        rows.append({"name": name, "arch": checkpoint["arch"], "resolution": checkpoint["resolution"],
                     "metrics": evaluation.metrics, "threshold": evaluation.threshold,
                     "confusion_matrix": evaluation.matrix, "confusion": confusion,
                     "parameters": sum(p.numel() for p in model_from_checkpoint(checkpoint).parameters()),
                     "onnx_mb": os.path.getsize(onnx_path) / 1e6, "latency_ms": _latency_ms(onnx_path, args.runs),
                     "epochs_trained": len(checkpoint.get("history") or []), "recipe": (checkpoint.get("args") or {})})
    _roc_figure(evaluations, args.split, os.path.join(args.output, "roc_overlay.png"))
    write_json(os.path.join(args.output, "comparison.json"), {"data": args.data, "split": args.split, "models": rows})
    report = os.path.join(args.output, "report.md")
    with open(report, "w", encoding="utf-8") as handle:
        handle.write(_report(rows, args.split, args.data, command))
    return report


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate (and if asked, train) several models on one split "
                                                 "and write a comparison report.")
    parser.add_argument("data", help="data set root (DATA/<split>/<CLASS>/)")
    parser.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR", help="model folders to compare")
    parser.add_argument("--split", default="val", help="split to compare on (default val)")
    parser.add_argument("--output", default=os.path.join("reports", "compare"), help="report folder")
    parser.add_argument("--recipe", action="append", default=[], metavar="MODEL_DIR=ARGUMENTS",
                        help="train.py arguments for a model dir that is not trained yet (repeatable)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs for the latency (default 50)")
    parser.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    parser.add_argument("-j", "--workers", type=int, default=min(4, os.cpu_count() or 1), help="decode threads")
    parser.add_argument("--device", default="auto", help="evaluation device")
    return parser


def main(args: argparse.Namespace, command: str = "python3 -m bench.compare_models ...") -> int:
    print(f"=> report: {compare(args, command)}")
    return 0


def cli() -> None:
    command = "python3 -m bench.compare_models " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_cli(lambda: main(get_args_parser().parse_args(), command), "bench.compare_models")


if __name__ == "__main__":
    cli()
