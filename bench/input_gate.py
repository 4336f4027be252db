"""What the input gate refuses, what it lets through, what REFER costs in coverage, and what it all costs
in time: classify.py itself over in-scope X-rays and an out-of-scope set, in one run.

    python3 -m bench.input_gate --model models/pneumonia --data data/pneumonia

- in scope: validation (the held-out half of its patients, on which no threshold was chosen, and all of
  it), its five shift proxies (train/shift.py, written as PNG at network resolution), and the
  full-resolution samples in ../shared/datasets when present;
- out of scope: bench/out_of_scope.py's kinds, the X-ray-derived ones made from validation images;
- per set: the share refused and why; per out-of-scope kind: each detector's AUROC against validation;
- REFER on each labelled in-scope set: coverage and sensitivity/specificity among decided cases (95%
  Wilson intervals) against deciding everything;
- cost: batch-1 inference with and without the gate's layers (two exports of the same checkpoint, timed
  interleaved in this process) and the host checks per image.
Printed as tables, written to bench/results/input_gate.json, drawn to docs/results/input_gate.png.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess  # noqa: S404 (runs this repository's own classify.py)
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from bench.jetson_agreement import SHARED, write_proxies
from bench.out_of_scope import find_xrays, write_out_of_scope_set
from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.input_gate import GATE_COLUMNS, STATUS_DECIDED, STATUS_NOT_ASSESSED, layout_margin
from cxr_jetson.core.model_files import locate_model
from cxr_jetson.train.input_gate import tuning_half
from cxr_jetson.train.report import write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DETECTORS = ("gate_mahalanobis", "gate_energy", "layout")


def classify_folder(model: str, folder: str, results: str, *extra: str) -> Dict[str, Dict[str, str]]:
    """classify.py over a folder (no images written); its results.csv rows by path."""
    command = [sys.executable, os.path.join(REPO, "classify.py"), folder, "--model", model, "--results", results,
               "-q", "--batch-size", "8", *extra]
    subprocess.run(command, check=False, capture_output=True, cwd=REPO)  # noqa: S603 (fixed arguments)
    with open(results, newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def _layout(row: Dict[str, str]) -> float:
    return -layout_margin(np.array([float(row[f"gate_{column}"]) for column in GATE_COLUMNS]))[0]


def _detector(rows: List[Dict[str, str]], name: str) -> np.ndarray:
    scored = [row for row in rows if row.get("gate_mahalanobis")]
    return np.array([_layout(row) if name == "layout" else float(row[name]) for row in scored])


def _interval(successes: int, trials: int) -> List[float]:
    if trials == 0:
        return [float("nan")] * 3
    ci = binomtest(successes, trials).proportion_ci(method="wilson")
    return [successes / trials, ci.low, ci.high]


def _labelled_summary(rows: List[Dict[str, str]], positive: str) -> Dict[str, object]:
    """Coverage, and sensitivity/specificity among decided cases against deciding every assessed case."""
    truth = [os.path.basename(os.path.dirname(path)).upper() == positive for path in (r["path"] for r in rows)]
    assessed = [(row, sick) for row, sick in zip(rows, truth) if row["status"] not in (STATUS_NOT_ASSESSED, "error")]
    decided = [(row, sick) for row, sick in assessed if row["status"] == STATUS_DECIDED]

    def rates(pairs):
        hits = [(row["label"] == positive, sick) for row, sick in pairs]
        return {"sensitivity": _interval(sum(p and s for p, s in hits), sum(s for _, s in hits)),
                "specificity": _interval(sum(not p and not s for p, s in hits), sum(not s for _, s in hits))}
    return {"images": len(rows), "refused": _interval(len(rows) - len(assessed), len(rows)),
            "coverage": _interval(len(decided), len(assessed)), "all_assessed": rates(assessed),
            "decided": rates(decided)}


def _reasons(rows: List[Dict[str, str]]) -> Dict[str, int]:
    """Why the refused rows were refused (a file too small or broken to decode fails before the gate)."""
    counts: Dict[str, int] = {}
    for row in rows:
        if row["status"] in (STATUS_NOT_ASSESSED, "error"):
            key = row["reason"] if row["status"] == STATUS_NOT_ASSESSED else "not decodable (too small or broken)"
            counts[key] = counts.get(key, 0) + 1
    return counts


def _latency(onnx_files: Dict[str, str], resolution: int, runs: int = 300) -> Dict[str, float]:
    """Median batch-1 ONNX Runtime latency per file, timed interleaved so both see the same machine state."""
    import onnxruntime
    sessions = {name: onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
                for name, path in onnx_files.items()}
    batch = np.random.default_rng(0).normal(size=(1, 3, resolution, resolution)).astype(np.float32)
    times: Dict[str, List[float]] = {name: [] for name in sessions}
    for _ in range(runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"input_0": batch})
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: float(np.median(values)) for name, values in times.items()}


def _host_check_cost(folder: str, model_onnx: str) -> float:
    """Mean ms per image of the checks the host runs on the decoded frame (size, colour, DICOM header)."""
    import onnx

    from cxr_jetson.core.decode import decode_grey, read_bytes
    from cxr_jetson.core.model_info import ModelInfo
    from cxr_jetson.edge.frames import Frame
    from cxr_jetson.edge.host_checks import check_frame
    info = ModelInfo.from_metadata({p.key: p.value for p in onnx.load(model_onnx).metadata_props})
    frames = []
    for index, path in enumerate(find_xrays(folder)):
        data = read_bytes(path)
        grey = decode_grey(data, path, info.spec.decode_min_side)
        frames.append(Frame(index, path, path, grey, grey, data))
    start = time.perf_counter()
    for frame in frames:
        check_frame(frame, info.gate, info.spec.resolution)
    return (time.perf_counter() - start) * 1000 / max(1, len(frames))


def _in_scope_sets(data: str, labels: List[str], resolution: int, scratch: str) -> Dict[str, str]:
    """Folders of in-scope images: validation, its proxies, the full-resolution samples."""
    sets = write_proxies(os.path.join(data, "val"), labels, resolution, os.path.join(scratch, "proxies"))
    samples = os.path.join(REPO, SHARED, "chest_xray_fullres_samples")
    if os.path.isdir(samples):
        sets["full-resolution samples"] = samples
    return sets


def _rows_by_set(model: str, folders: Dict[str, str], scratch: str, *extra: str) -> Dict[str, List[Dict[str, str]]]:
    out = {}
    for name, folder in folders.items():
        rows = classify_folder(model, folder, os.path.join(scratch, f"{name.replace(' ', '_')}{len(extra)}.csv"), *extra)
        out[name] = list(rows.values())
    return out


def _held_out(rows: List[Dict[str, str]]) -> List[Dict[str, str]]:
    """The validation patients no threshold of the gate was chosen on (train/input_gate.py's other half)."""
    keep = ~tuning_half([row["path"] for row in rows])
    return [row for row, kept in zip(rows, keep) if kept]


def _auroc(in_scope: List[Dict[str, str]], out: List[Dict[str, str]]) -> Dict[str, float]:
    result = {}
    for name in DETECTORS:
        inside, outside = _detector(in_scope, name), _detector(out, name)
        if len(inside) and len(outside):
            result[name] = float(roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))],
                                               np.r_[inside, outside]))
    return result


def _export_without_gate(model_dir: str, scratch: str) -> str:
    from cxr_jetson.export.onnx_export import ExportOptions, export_onnx
    return export_onnx(ExportOptions(model_dir=model_dir, output=os.path.join(scratch, "ungated.onnx"), gate=False))


def _rtx_build(onnx_path: str, scratch: str) -> Dict[str, object]:
    """Does the gated ONNX still build with TensorRT-RTX (the offline builder)? A copy is built in scratch."""
    import shutil
    folder = os.path.join(scratch, "rtx")
    os.makedirs(folder, exist_ok=True)
    copy = shutil.copy(onnx_path, folder)
    start = time.perf_counter()
    command = [sys.executable, os.path.join(REPO, "trt_build.py"), "--onnx", copy, "--compute-capability", "SM86"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)  # noqa: S603 (fixed arguments)
    last = (result.stdout + result.stderr).strip().splitlines()
    return {"returncode": result.returncode, "seconds": round(time.perf_counter() - start, 1),
            "last_line": (last[-1] if last else "").replace(scratch, "<scratch>")}


def _plot(in_scope: Dict[str, List[Dict[str, str]]], out: Dict[str, List[Dict[str, str]]], threshold: float,
          path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(9, 4.5))
    # Grouped so the picture stays readable; the tiny kind is left out (the size check refuses it, and most
    # of it never reaches the model).
    groups = {"in scope: validation and its 5 shift proxies": sum(in_scope.values(), []),
              "X-rays made unreadable: inverted, rotated, cropped": sum(
                  (out[k] for k in ("inverted_xray", "rotated_xray", "cropped_xray")), []),
              "not X-rays: photos, documents, noise, blank frames": sum(
                  (out[k] for k in ("natural_photo", "natural_grey", "document", "noise", "blank")), [])}
    bins = np.logspace(np.log10(0.3), np.log10(300), 70)
    for (name, rows), colour in zip(groups.items(), ("tab:blue", "tab:orange", "tab:red")):
        values = _detector(rows, "gate_mahalanobis")
        axis.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.45, color=colour,
                  weights=np.full(len(values), 1 / max(1, len(values))), label=f"{name} ({len(values)})")
    axis.axvline(threshold, color="black", linestyle="--", label=f"refuse above {threshold:.2f}")
    axis.set(xscale="log", xlabel="Mahalanobis score (gate_0 column 0; clipped to 0.3-300)", ylabel="share of group",
             title="Input gate: feature distance of in-scope X-rays and of out-of-scope inputs")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _print_tables(report: Dict[str, object]) -> None:
    print("\n| in-scope set | images | refused (95% CI) | why |\n|---|---|---|---|")
    for name, row in report["in_scope"].items():
        share, low, high = row["refused"]
        print(f"| {name} | {row['images']} | {share:.1%} ({low:.1%}-{high:.1%}) | {row['reasons'] or '-'} |")
    print("\n| out-of-scope kind | images | refused | why | AUROC vs val: " + " / ".join(DETECTORS) + " |")
    print("|---|---|---|---|---|")
    for kind, row in report["out_of_scope"].items():
        auroc = " / ".join(f"{row['auroc'].get(d, float('nan')):.3f}" for d in DETECTORS)
        print(f"| {kind} | {row['images']} | {row['refused'][0]:.0%} | {row['reasons']} | {auroc} |")
    print("\n| set | coverage (decided) | sensitivity: all / decided | specificity: all / decided |\n|---|---|---|---|")
    for name, row in report["refer"].items():
        every, decided = row["all_assessed"], row["decided"]
        print(f"| {name} | {row['coverage'][0]:.1%} | {every['sensitivity'][0]:.3f} / {decided['sensitivity'][0]:.3f} "
              f"({decided['sensitivity'][1]:.3f}-{decided['sensitivity'][2]:.3f}) | {every['specificity'][0]:.3f} / "
              f"{decided['specificity'][0]:.3f} ({decided['specificity'][1]:.3f}-{decided['specificity'][2]:.3f}) |")
    cost = report["cost"]
    print(f"\ncost: batch-1 ONNX Runtime {cost['ms_with_gate']:.2f} ms with the gate, {cost['ms_without_gate']:.2f} "
          f"without (ratio {cost['ms_with_gate'] / cost['ms_without_gate']:.3f}); host checks "
          f"{cost['ms_host_checks_xrays']:.3f} ms per full-resolution X-ray, {cost['ms_host_checks_photos']:.3f} ms "
          f"per colour photo; TensorRT-RTX build of the gated ONNX: {report['tensorrt_rtx']}")


def run(model_dir: str, data: str, per_kind: int, scratch: str) -> Dict[str, object]:
    import onnx

    from cxr_jetson.core.model_info import ModelInfo
    onnx_path = locate_model(model_dir, ("onnx",))
    info = ModelInfo.from_metadata({p.key: p.value for p in onnx.load(onnx_path).metadata_props})
    if info.gate is None:
        raise SystemExit(f"{onnx_path} has no input gate: fit it (python3 -m cxr_jetson.train.input_gate) and export")
    in_folders = _in_scope_sets(data, info.labels, info.spec.resolution, scratch)
    out_root = os.path.join(scratch, "out_of_scope")
    out_folders = {kind: os.path.join(out_root, kind) for kind in
                   write_out_of_scope_set(find_xrays(os.path.join(data, "val")), out_root, per_kind)}
    in_rows = _rows_by_set(onnx_path, in_folders, scratch)
    in_rows["val, held-out half"] = _held_out(in_rows["val"])
    out_rows = _rows_by_set(onnx_path, out_folders, scratch)
    positive = info.positive_class or info.labels[-1]
    report: Dict[str, object] = {
        "model": os.path.join(os.path.basename(os.path.dirname(onnx_path)), os.path.basename(onnx_path)),
        "policy": info.gate.to_json(),
        "in_scope": {n: {"images": len(r), "refused": _labelled_summary(r, positive)["refused"], "reasons": _reasons(r)}
                     for n, r in in_rows.items()},
        "out_of_scope": {k: {"images": len(r), "refused": _interval(sum(x["status"] in (STATUS_NOT_ASSESSED, "error")
                                                                        for x in r), len(r)),
                             "reasons": _reasons(r), "auroc": _auroc(in_rows["val"], r)} for k, r in out_rows.items()},
        "refer": {n: _labelled_summary(r, positive) for n, r in in_rows.items()},
    }
    ungated = _export_without_gate(os.path.dirname(onnx_path), scratch)
    latency = _latency({"gated": onnx_path, "ungated": ungated}, info.spec.resolution)
    report["cost"] = {"ms_with_gate": latency["gated"], "ms_without_gate": latency["ungated"],
                      "ms_host_checks_xrays": _host_check_cost(in_folders.get("full-resolution samples",
                                                                               in_folders["val"]), onnx_path),
                      "ms_host_checks_photos": _host_check_cost(out_folders["natural_photo"], onnx_path)}
    report["tensorrt_rtx"] = _rtx_build(onnx_path, scratch)
    _plot({n: r for n, r in in_rows.items() if n.startswith("val~") or n == "val"}, out_rows,
          info.gate.mahalanobis, os.path.join(REPO, "docs", "results", "input_gate.png"))
    return report


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="input_gate_") as scratch:
        report = run(args.model, args.data, args.per_kind, scratch)
    _print_tables(report)
    write_json(args.output, report)
    print(f"\nwritten: {args.output}, docs/results/input_gate.png")
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/pneumonia", help="model folder with the gated ONNX")
    parser.add_argument("--data", default="data/pneumonia", help="the data set it was trained on (val/ is used)")
    parser.add_argument("--per-kind", type=int, default=40, help="out-of-scope images per kind")
    parser.add_argument("--output", default=os.path.join(REPO, "bench", "results", "input_gate.json"))
    return parser


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.input_gate")
