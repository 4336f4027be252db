"""The bad inputs, paths, kills and requests of "Nothing lost, nothing silently wrong", run against a checkout.

    python3 -m bench.bad_input_examples [--checkout ROOT] [--work DIR] [--tag after]

Each example runs the checkout's own entry scripts as a user would (its folder first on PYTHONPATH)
and records what happened: exit status, whether it hung, whether it ended in a traceback (and its
last line), and what matters for that example (were the inputs changed, was the import still there,
how many rows were kept, peak memory). Run it on an older checkout and on this one to get the
before/after table; rows go to bench/results/bad_input_examples.json under --tag. The synthetic
download, data set and 64 px model it needs are made once in --work by this checkout's tools.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Tuple

from cxr_jetson.core.cli import run_cli
from cxr_jetson.data.synthetic import generate
from cxr_jetson.train.report import write_json
from tests import bad_files
from tests.forked_cli import ctrl_c_reaches_it, peak_memory, with_peak_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTS = {"train/NORMAL": 24, "train/PNEUMONIA": 24, "val/NORMAL": 4, "val/PNEUMONIA": 4,
          "test/NORMAL": 4, "test/PNEUMONIA": 4}
TRAIN = ["--resolution", "64", "--no-pretrained", "--epochs", "1", "--print-freq", "0", "--batch-size", "8"]
Row = Dict[str, Any]
_TOLD = ("error", "warning", "failed:", "skipped:")  # the lines that tell the user what went wrong


class Checkout:
    """Runs the entry scripts of one checkout in subprocesses."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.env = dict(os.environ, PYTHONPATH=self.root, PYTHONUNBUFFERED="1")

    def popen(self, args: List[str], **kwargs: Any) -> subprocess.Popen:
        # the project's own entry scripts under this interpreter, with arguments this script makes
        return subprocess.Popen([sys.executable] + args, cwd=self.root, env=self.env, text=True,  # noqa: S603
                                preexec_fn=ctrl_c_reaches_it, **kwargs)

    def run(self, args: List[str], timeout: float = 300) -> Row:
        process = self.popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = process.communicate(timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            hung = True
        traceback = "Traceback" in err
        lines = err.strip().splitlines()
        told = [line.strip() for line in lines if any(word in line.lower() for word in _TOLD)]
        line = lines[-1] if traceback else (told[0] if told else "")
        printed = [text for text in (out + err).splitlines() if "%" in text and "classify:" in text][:2]
        return {"rc": process.returncode, "hung": hung, "traceback": traceback, "line": line[:220],
                "printed": printed}


def _digest(folder: str) -> Dict[str, str]:
    names = sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)))
    return {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest() for n in names}


def _good_folder(folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    bad_files.good_xray(os.path.join(folder, "a.png"), 1)
    bad_files.good_xray(os.path.join(folder, "b.png"), 2, True)
    return folder


def _ok_rows(results_csv: str) -> int:
    return open(results_csv).read().count(",ok,") if os.path.isfile(results_csv) else 0


def make_inputs(work: str) -> Tuple[str, str, str]:
    """(download, data set, 64 px model folder) in ``work``, made once with this checkout's tools."""
    download, data, model = (os.path.join(work, name) for name in ("download", "data", "model"))
    here = Checkout(REPO)
    if not os.path.isdir(download):
        generate(download, COUNTS, seed=0, max_side=400)
    if not os.path.isdir(data):
        here.run(["-m", "data.prepare", download, "-o", data, "--val-fraction", "0.25"])
    if not os.path.isfile(os.path.join(model, "resnet18.onnx")):
        here.run(["train.py", data, "--model-dir", model, "--overwrite"] + TRAIN, timeout=1800)
        here.run(["onnx_export.py", "--model-dir", model])
    return download, data, model


class Examples:
    """The examples, one method each, run by ``checkout`` in the scratch folder ``work``."""

    def __init__(self, checkout: Checkout, work: str, download: str, data: str, model_dir: str) -> None:
        self.checkout, self.work, self.download, self.data, self.model_dir = checkout, work, download, data, model_dir
        self.model = os.path.join(model_dir, "resnet18.onnx")
        self.classify = ["classify.py", "--model", self.model]

    def path(self, *parts: str) -> str:
        return os.path.join(self.work, *parts)

    def over_inputs(self) -> Row:
        folder = _good_folder(self.path("scans"))
        before = _digest(folder)
        row = self.checkout.run(self.classify + [folder, folder, "-q"])
        return {**row, "inputs changed": _digest(folder) != before}

    def import_with_slash(self) -> Row:
        output = self.path("imported")
        self.checkout.run(["-m", "data.prepare", self.download, "-o", output, "--val-fraction", "0.25"])
        row = self.checkout.run(["-m", "data.prepare", self.download, "-o", output + "/", "--force",
                                 "--val-fraction", "0.25"])
        return {**row, "import still there": os.path.isfile(os.path.join(output, "manifest.csv"))}

    def train_over_model(self) -> Row:
        target = self.path("trained")
        shutil.copytree(self.model_dir, target)
        before = _digest(target)["model_best.pth.tar"]
        row = self.checkout.run(["train.py", self.data, "--model-dir", target] + TRAIN, timeout=1800)
        return {**row, "model replaced": _digest(target).get("model_best.pth.tar") != before}

    def same_stem(self) -> Row:
        folder, output = self.path("stems"), self.path("stems_out")
        os.makedirs(folder)
        bad_files.good_xray(os.path.join(folder, "scan.png"), 1)
        bad_files.good_xray(os.path.join(folder, "scan.webp"), 2)
        row = self.checkout.run(self.classify + [folder, output, "-q"])
        return {**row, "annotated files": len([n for n in os.listdir(output) if n != "results.csv"])}

    def bad_file_in_folder(self, maker: Callable[[str], None], name: str) -> Row:
        folder = _good_folder(self.path("folder-" + name.replace(".", "-")))
        maker(os.path.join(folder, name))
        row = self.checkout.run(self.classify + [folder, folder + "_out", "-q"])
        return {**row, "good images classified": _ok_rows(os.path.join(folder + "_out", "results.csv"))}

    def lying_jpeg_in_training(self) -> Row:
        copy = self.path("data_bad")
        shutil.copytree(self.data, copy)
        bad_files.lying_jpeg(os.path.join(copy, "train", "NORMAL", "liar.jpeg"))
        return self.checkout.run(["train.py", copy, "--model-dir", self.path("m2")] + TRAIN, timeout=1800)

    def lying_jpeg_in_import(self) -> Row:
        source = self.path("download_bad")
        shutil.copytree(self.download, source)
        bad_files.lying_jpeg(os.path.join(source, "chest_xray", "train", "NORMAL", "IM-9001-0001.jpeg"))
        row = self.checkout.run(["-m", "data.prepare", source, "-o", self.path("imp2"), "--val-fraction", "0.25"])
        manifest = self.path("imp2", "manifest.csv")
        return {**row, "imported as an image": os.path.isfile(manifest) and "IM-9001-0001" in open(manifest).read()}

    def png_bomb(self) -> Row:
        bomb = self.path("bomb.png")
        bad_files.png_bomb(bomb, 30000)
        measured = with_peak_memory([sys.executable] + self.classify + [bomb, "-q"])[1:]  # popen adds the python
        process = self.checkout.popen(measured, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        status, peak_kib = peak_memory(process.communicate()[0])
        return {"rc": status, "peak MiB": round(peak_kib / 1024), "file KiB": os.path.getsize(bomb) // 1024}

    def fifo(self) -> Row:
        folder = _good_folder(self.path("fifo"))
        os.mkfifo(os.path.join(folder, "x.jpg"))
        return self.checkout.run(self.classify + [folder, "-q"], timeout=30)

    def labels(self, text: str) -> Row:
        path = self.path("labels.txt")
        open(path, "w").write(text)
        return self.checkout.run(self.classify + [_good_folder(self.path("lab")) + "/a.png", "--labels", path])

    def logits_model(self) -> Row:
        os.makedirs(self.path("logits"), exist_ok=True)
        logits = bad_files.model_without_softmax(self.model, self.path("logits", "resnet18.onnx"), 1000.0)
        return self.checkout.run(["classify.py", "--model", logits, _good_folder(self.path("lab")) + "/b.png"])

    def one_pixel(self) -> Row:
        bad_files.one_pixel(self.path("dot.png"))
        return self.checkout.run(self.classify + [self.path("dot.png")])

    def ctrl_c(self) -> Row:
        folder, output = self.path("many"), self.path("many_out")
        os.makedirs(folder)
        for index in range(3000):  # enough that the run cannot end before the signal arrives
            bad_files.good_xray(os.path.join(folder, f"{index:04d}.png"), index, side=96)
        process = self.checkout.popen(self.classify + [folder, output], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen = 0
        for line in process.stdout:
            seen += line.startswith("classify:")
            if seen == 10:
                break
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
        return {"rc": process.returncode, "rows kept": _ok_rows(os.path.join(output, "results.csv"))}

    def results_under_proc(self) -> Row:
        return self.checkout.run(self.classify + [_good_folder(self.path("tb")), "-q", "--results", "/proc/x/r.csv"])

    def export_under_proc(self) -> Row:
        return self.checkout.run(["onnx_export.py", "--model-dir", self.model_dir, "--output", "/proc/x/m.onnx"])

    def model_dir_is_a_file(self) -> Row:
        open(self.path("afile"), "w").write("x")
        return self.checkout.run(["train.py", self.data, "--model-dir", self.path("afile")] + TRAIN, timeout=1800)

    def unwritable_engine(self) -> Row:
        onnx_path = self.path("trt", "resnet18.onnx")
        os.makedirs(self.path("trt", "resnet18.fp16.b1.engine"))  # a folder where the engine goes
        shutil.copy(self.model, onnx_path)
        start = time.time()
        row = self.checkout.run(["trt_build.py", "--onnx", onnx_path, "--compute-capability", "SM86"], timeout=900)
        return {**row, "seconds": round(time.time() - start, 1)}

    def bad_crc_zip(self) -> Row:
        archive = bad_files.zip_with_bad_crc(self.download, self.path("bad.zip"))
        row = self.checkout.run(["-m", "data.prepare", archive, "-o", self.path("imp3"), "--val-fraction", "0.25"])
        report = self.path("imp3", "prepare_report.json")
        excluded = json.load(open(report))["excluded"] if os.path.isfile(report) else []
        return {**row, "listed as damaged": [item["reason"] for item in excluded if "damaged" in item["reason"]][:1]}

    def web_view(self) -> Row:
        port = 18000 + os.getpid() % 1000
        process = self.checkout.popen(self.classify + [_good_folder(self.path("web")), f"http://@:{port}", "-q",
                                                       "--web-linger", "30"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(8)
        pages = {path: _get(port, path) for path in ("/", "/app.js")}
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        return {"page without a token": pages["/"][0],
                "warning": [line for line in (out + err).splitlines() if "warning" in line][:1],
                "innerHTML in page or script": b"innerHTML" in pages["/"][1] + pages["/app.js"][1]}

    def all(self) -> List[Tuple[str, Callable[[], Row]]]:
        return [
            ("classify.py scans/ scans/", self.over_inputs),
            ("data.prepare SRC -o DIR/ --force", self.import_with_slash),
            ("train.py into a --model-dir with a trained model", self.train_over_model),
            ("scan.png and scan.webp in one folder", self.same_stem),
            ("a DICOM with WindowWidth 0 in a folder", lambda: self.bad_file_in_folder(bad_files.dicom_zero_window,
                                                                                      "a0.dcm")),
            ("a JPEG claiming 60000 x 60000 in a folder", lambda: self.bad_file_in_folder(bad_files.lying_jpeg,
                                                                                         "a0.jpg")),
            ("the lying JPEG in a training set", self.lying_jpeg_in_training),
            ("the lying JPEG in an import", self.lying_jpeg_in_import),
            ("a 30000 x 30000 PNG bomb", self.png_bomb),
            ("a named pipe x.jpg in a folder", self.fifo),
            ("--labels in another order", lambda: self.labels("PNEUMONIA\nNORMAL\n")),
            ("--labels in lower case", lambda: self.labels("normal\npneumonia\n")),
            ("a model whose output_0 is logits", self.logits_model),
            ("a 1 x 1 image", self.one_pixel),
            ("Ctrl+C in the middle of a folder", self.ctrl_c),
            ("--results under /proc", self.results_under_proc),
            ("onnx_export.py --output under /proc", self.export_under_proc),
            ("train.py --model-dir naming a file", self.model_dir_is_a_file),
            ("trt_build.py where the engine cannot be written", self.unwritable_engine),
            ("a zip with a bad CRC", self.bad_crc_zip),
            ("web view on http://@:PORT", self.web_view),
        ]


def _get(port: int, path: str) -> Tuple[Any, bytes]:
    """(status, body) of GET ``path`` on loopback, or (the error, b"")."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except OSError as err:
        return str(err), b""


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run the bad-input examples against a checkout.")
    parser.add_argument("--checkout", default=REPO, help="root of the checkout to run (default: this one)")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "cxr-bad-input-examples"),
                        help="where the download, data set and model are made once and kept")
    parser.add_argument("--tag", default="after", help="name of this run in the results file")
    parser.add_argument("--output", default=os.path.join("bench", "results", "bad_input_examples.json"))
    return parser


def main(args: argparse.Namespace) -> int:
    download, data, model_dir = make_inputs(args.work)
    checkout = Checkout(args.checkout)
    rows = []
    with tempfile.TemporaryDirectory(prefix="examples-") as work:
        for name, example in Examples(checkout, work, download, data, model_dir).all():
            # the machine's scratch folders are named, not spelled out, in what is kept
            text = json.dumps({"example": name, **example()}).replace(work, "SCRATCH").replace(args.work, "INPUTS")
            print(text, flush=True)
            rows.append(json.loads(text))
    # git from PATH, as a developer runs it, with fixed arguments: which commit the rows describe
    commit = subprocess.run(["git", "-C", checkout.root, "rev-parse", "--short", "HEAD"],  # noqa: S603, S607
                            capture_output=True, text=True).stdout.strip()
    existing = json.load(open(args.output)) if os.path.isfile(args.output) else {}
    existing[args.tag] = {"commit": commit or "unknown", "rows": rows}
    write_json(args.output, existing)
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.bad_input_examples")
