"""End-to-end throughput of classify.py against a naive script, on full-resolution X-rays.

    python3 -m bench.classify_throughput                       # ../shared/datasets/chest_xray_fullres_samples
    python3 -m bench.classify_throughput --images DIR --passes 4
    python3 -m bench.classify_throughput --ours-args "--precision int8"    # the INT8 ONNX (onnx_export.py --int8)

Both read every image, classify it and write an annotated JPEG of the same size, in the same process:
- naive: PIL open, torchvision transforms (Resize + ToTensor + Normalize), torch eager FP32,
  PIL ImageDraw text, PIL save, one image after the other;
- ours: classify.py's pipeline (edge/pipeline.py): reduced-scale JPEG decode for the network and the
  full-size decode for the picture in worker threads, ONNX Runtime inference (the equalisation done by
  OpenCV on the host), overlay and a 4:2:0 JPEG encode in a writer thread.
Both are timed from the model folder to the last file written (model loading included). The folder is
looped --passes times for a stable figure; the ratio printed is images per second. With --repeats N
the three runs are interleaved N times and the medians reported, each round's ratio beside them.
"""
from __future__ import annotations

import argparse
import glob
import os
import shlex
import shutil
import statistics
import tempfile
import time
from typing import Dict, List

from bench.machine import describe
from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.model_files import default_model_path, locate_model
from cxr_jetson.train.report import write_json

SHARED_IMAGES = os.path.join("..", "shared", "datasets", "chest_xray_fullres_samples")


def _images(folder: str, passes: int, scratch: str) -> str:
    """A folder holding ``passes`` copies (symlinks) of every image, so both sides see the same files."""
    sources = sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                     if p.lower().endswith((".jpeg", ".jpg", ".png")))
    if not sources:
        raise ToolkitError(f"no images in {folder}")
    looped = os.path.join(scratch, "input")
    for copy in range(passes):
        target = os.path.join(looped, f"pass{copy}")
        os.makedirs(target)
        for path in sources:
            os.symlink(os.path.abspath(path), os.path.join(target, os.path.basename(path)))
    return looped


def naive(inputs: str, model_dir: str, output: str) -> float:
    import torch
    from PIL import Image, ImageDraw
    from torchvision import transforms

    from cxr_jetson.networks.checkpoint import load_checkpoint
    from cxr_jetson.networks.model import model_from_checkpoint
    start = time.perf_counter()  # from the model folder to the last file written, as ours is timed
    checkpoint = load_checkpoint(locate_model(model_dir, ("checkpoint",)))
    model = model_from_checkpoint(checkpoint)
    labels = checkpoint["classes"]
    prepare = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                  transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    paths = sorted(glob.glob(os.path.join(inputs, "*", "*")))
    with torch.inference_mode():
        for index, path in enumerate(paths):
            image = Image.open(path).convert("RGB")
            probabilities = torch.softmax(model(prepare(image)[None]), 1)[0]
            best = int(probabilities.argmax())
            ImageDraw.Draw(image).text((5, 5), f"{probabilities[best] * 100:05.2f}% {labels[best]}", fill=(255, 0, 0))
            image.save(os.path.join(output, f"{index:05d}.jpg"), quality=95)
    return len(paths) / (time.perf_counter() - start)


def ours(inputs: str, model_dir: str, output: str, *options: str) -> float:
    from cxr_jetson.edge.classify import get_args_parser, main
    start = time.perf_counter()
    main(get_args_parser().parse_args([inputs, output, "--model", model_dir, "-q", "--profile", *options]))
    count = len(glob.glob(os.path.join(output, "*", "*.jpeg")))
    return count / (time.perf_counter() - start)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="classify.py throughput against a naive PIL + torch script.")
    parser.add_argument("--images", default=SHARED_IMAGES, help="folder of full-resolution X-rays")
    parser.add_argument("--model", default=default_model_path(), help="model folder (checkpoint + ONNX)")
    parser.add_argument("--passes", type=int, default=4, help="times the folder is processed")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of all three runs, interleaved; the medians are reported (a shared machine's "
                             "speed drifts by 10-20%% within minutes)")
    parser.add_argument("--ours-args", default="", help="extra classify.py arguments for ours, e.g. \"--precision int8\"")
    parser.add_argument("--output", default=os.path.join("bench", "results", "classify_throughput.json"))
    return parser


def _round(inputs: str, args: argparse.Namespace, scratch: str, extra: List[str]) -> Dict[str, float]:
    """One run of each side, into fresh output folders: images per second."""
    outputs = {name: tempfile.mkdtemp(prefix=name, dir=scratch) for name in ("ours", "ours_decoded", "naive")}
    print("== ours: classify.py (annotated images at full resolution, the default)")
    full = ours(inputs, args.model, outputs["ours"], *extra)
    print("== ours: classify.py --output-size decoded")
    decoded = ours(inputs, args.model, outputs["ours_decoded"], "--output-size", "decoded", *extra)
    print("== naive: PIL + torchvision + torch eager + PIL draw/save")
    naive_rate = naive(inputs, args.model, outputs["naive"])
    for folder in outputs.values():
        shutil.rmtree(folder)
    print(f"   naive {naive_rate:.1f} img/s; classify.py {full:.1f} img/s ({full / naive_rate:.2f}x), "
          f"with --output-size decoded {decoded:.1f} img/s ({decoded / naive_rate:.2f}x)")
    return {"naive": naive_rate, "ours": full, "ours_decoded": decoded,
            "ratio": full / naive_rate, "ratio_output_size_decoded": decoded / naive_rate}


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        inputs = _images(args.images, args.passes, scratch)
        count = len(glob.glob(os.path.join(inputs, "*", "*")))
        print(f"== {count} images ({args.passes} passes over {args.images}) on {describe()}")
        rounds = [_round(inputs, args, scratch, shlex.split(args.ours_args)) for _ in range(max(1, args.repeats))]
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    each = ", ".join(f"{r['ratio']:.2f}x" for r in rounds)
    spread = f" (rounds: {each})" if len(rounds) > 1 else ""
    print(f"\nnaive {median['naive']:.1f} img/s; classify.py {median['ours']:.1f} img/s ({median['ratio']:.2f}x){spread}, "
          f"with --output-size decoded {median['ours_decoded']:.1f} img/s ({median['ratio_output_size_decoded']:.2f}x)")
    write_json(args.output, {"images": count, "passes": args.passes, "source": args.images, "ours_args": args.ours_args,
                             "naive_images_per_second": median["naive"], "ours_images_per_second": median["ours"],
                             "ours_output_size_decoded_images_per_second": median["ours_decoded"],
                             "ratio": median["ratio"], "ratio_output_size_decoded": median["ratio_output_size_decoded"],
                             "rounds": rounds, "machine": describe()})
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.classify_throughput")
