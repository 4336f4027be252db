"""The runner's pipeline: decode, infer and write in parallel, so the slowest stage sets the rate.

    reader thread   source.jobs() in order; each job's decode + preprocess goes to a thread pool (with the
                    full-size decode the picture is drawn on, when the network saw a reduced one)
    main thread     takes decoded frames in order, runs batched inference, decides
    writer thread   overlay (+ heatmap), encode, write; results file and console line, in order

OpenCV, ONNX Runtime and TensorRT release the GIL while they work, so the threads really overlap.
Queues are bounded: a slow writer slows the reader instead of filling memory. Ctrl+C stops reading,
lets the writer finish what it has (a video file is finalised), and prints the summary.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from cxr_jetson.core.decode import decode_grey, jpeg_reduction
from cxr_jetson.core.errors import ImageDecodeError
from cxr_jetson.core.input_gate import GATE_COLUMNS, STATUS_DECIDED, GatePolicy, Verdict
from cxr_jetson.core.preprocess import PreprocessSpec, resize_to_network
from cxr_jetson.edge.deployed_model import DeployedModel
from cxr_jetson.edge.frames import Frame
from cxr_jetson.edge.heatmap import evidence_map
from cxr_jetson.edge.host_checks import check_frame
from cxr_jetson.edge.overlay import annotate
from cxr_jetson.edge.results import ResultsWriter
from cxr_jetson.edge.sinks import Sink
from cxr_jetson.edge.sources import Source
from cxr_jetson.edge.timing import STAGES, StageClock

_END = object()


@dataclass
class RunOptions:
    batch_size: int = 1
    top_k: int = 1
    heatmap: bool = False
    decode_workers: int = 2
    quiet: bool = False
    full_resolution: bool = True  # draw on a full decode when the network saw a reduced one


@dataclass
class Outcome:
    done: int = 0
    positives: int = 0
    failures: List[str] = field(default_factory=list)
    interrupted: bool = False
    statuses: Dict[str, int] = field(default_factory=dict)  # answers per status (core/input_gate.py)


def result_fields(labels: List[str], gate: bool = False) -> List[str]:
    """results.csv's columns: the answer, its probabilities, the input gate's scores (when the model has a
    gate), the stage times."""
    return (["path", "status", "label", "class_index", "confidence", "threshold"] + [f"p_{label}" for label in labels]
            + (["reason", "warnings"] + [f"gate_{name}" for name in GATE_COLUMNS] if gate else [])
            + [f"ms_{stage}" for stage in STAGES] + ["error"])


def _row(origin: str, model: DeployedModel, answer: Optional[Verdict], timings: Dict[str, float],
         error: str = "") -> Dict[str, object]:
    row: Dict[str, object] = {"path": origin, "status": "error" if error else answer.status, "error": error}
    prediction = answer.prediction if answer is not None else None
    if prediction is not None:
        row.update(label=prediction.label, class_index=prediction.class_index,
                   confidence=round(prediction.confidence, 6),
                   threshold=model.rule.threshold if model.rule.positive is not None else "",
                   **{f"p_{label}": round(p, 6) for label, p in prediction.ranked})
    if answer is not None and model.gate is not None:
        row.update(reason=answer.reason, warnings="; ".join(answer.warnings))
        if answer.scores is not None:
            row.update({f"gate_{name}": round(float(value), 6) for name, value in zip(GATE_COLUMNS, answer.scores)})
    row.update({f"ms_{stage}": round(ms, 3) for stage, ms in timings.items()})
    return row


class _Writer(threading.Thread):
    """Overlay, encode and write each classified frame, in order; record results as they come."""

    def __init__(self, model: DeployedModel, sink: Sink, results: ResultsWriter, options: RunOptions,
                 outcome: Outcome, clock: StageClock) -> None:
        super().__init__(daemon=True)
        self.model, self.sink, self.results, self.options = model, sink, results, options
        self.outcome, self.clock = outcome, clock
        self.inbox: "queue.Queue[Any]" = queue.Queue(maxsize=8)
        self.error: Optional[BaseException] = None
        self.stop_requested = False

    def fail(self, origin: str, message: str, timings: Dict[str, float]) -> None:
        self.outcome.failures.append(message)
        self.results.write(_row(origin, self.model, None, timings, message))
        self.sink.failed()
        tqdm.write(f"classify:  skipped {message}", file=sys.stderr)

    def _handle(self, frame: Frame, answer: Verdict, evidence: Optional[np.ndarray]) -> None:
        positive = answer.prediction.positive if answer.status == STATUS_DECIDED else None
        result = {"index": frame.index, "source": frame.name, "text": answer.text(), "positive": positive,
                  "status": answer.status}
        try:
            start = time.perf_counter()
            image = annotate(frame.display, answer, self.options.top_k, evidence) if self.sink.enabled else None
            drawn = time.perf_counter()
            if image is not None:
                self.sink.write(frame, image, result)
            frame.timings.update(overlay=(drawn - start) * 1000, encode=(time.perf_counter() - drawn) * 1000)
        except (OSError, ImageDecodeError) as err:
            self.fail(frame.origin, f"{frame.origin}: {err}", frame.timings)
            return
        self.outcome.done += 1
        self.outcome.positives += int(bool(positive))
        self.outcome.statuses[answer.status] = self.outcome.statuses.get(answer.status, 0) + 1
        self.clock.add(frame.timings)
        self.results.write(_row(frame.origin, self.model, answer, frame.timings))
        if not self.options.quiet:
            decided = (f"  class #{answer.prediction.class_index} ({answer.prediction.label})"
                       if answer.status == STATUS_DECIDED else "")
            flagged = "".join(f"  [warning: {warning}]" for warning in answer.warnings)
            tqdm.write(f"classify:  {answer.text()}{decided}{flagged}  {frame.origin}")

    def run(self) -> None:
        while True:
            item = self.inbox.get()
            if item is _END:
                return
            if self.error is not None or self.stop_requested:
                continue  # drain after a failure or a stop so the producer never blocks
            try:
                if item[0] == "failed":
                    self.fail(*item[1:])
                else:
                    self._handle(*item[1:])
            except KeyboardInterrupt:  # q or Esc in the display window: stop like Ctrl+C
                self.stop_requested = True
            except BaseException as err:  # re-raised in the main thread
                self.error = err


def _prepare(source: Source, job: Any, spec: PreprocessSpec, gate: Optional[GatePolicy], full_display: bool) -> Frame:
    """Decode a job (the source's work), check what the gate checks on the decoded frame, and make its
    network input (the same for every source). With ``full_display``, a JPEG the network saw reduced is
    decoded again at full size for the picture, here in the pool rather than in the one writer thread."""
    frame = source.load(job, spec.decode_min_side)
    start = time.perf_counter()
    if full_display and frame.data is not None and jpeg_reduction(frame.data, spec.decode_min_side) > 1:
        frame.display = decode_grey(frame.data, frame.origin)
        frame.timings["decode"] = frame.timings.get("decode", 0.0) + (time.perf_counter() - start) * 1000
        start = time.perf_counter()
    if gate is not None:
        check_frame(frame, gate, spec.resolution)
    frame.network = resize_to_network(frame.grey, spec)
    frame.timings["preprocess"] = (time.perf_counter() - start) * 1000
    return frame


class _Reader(threading.Thread):
    """Walks the source in order and queues each job's decode and preprocessing, running in the pool."""

    def __init__(self, source: Source, spec: PreprocessSpec, gate: Optional[GatePolicy], pool: ThreadPoolExecutor,
                 depth: int, full_display: bool) -> None:
        super().__init__(daemon=True)
        self.source, self.spec, self.gate, self.pool = source, spec, gate, pool
        self.full_display = full_display
        self.outbox: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            for job in self.source.jobs():
                if self.stop.is_set():
                    break
                self.outbox.put((job, self.pool.submit(_prepare, self.source, job, self.spec, self.gate,
                                                           self.full_display)))
        except BaseException as err:  # a source that fails (camera gone for good): re-raised in main
            self.error = err
        finally:
            self.outbox.put(_END)


def _infer(model: DeployedModel, frames: List[Frame], heatmap: bool, writer: _Writer) -> None:
    start = time.perf_counter()
    probabilities, cams, scores = model.split(model.run(np.stack([f.network for f in frames])))
    inferred = time.perf_counter()
    share = (inferred - start) * 1000 / len(frames)
    for index, frame in enumerate(frames):
        post_start = time.perf_counter()
        answer = model.verdict(probabilities[index], None if scores is None else scores[index], frame.refusal,
                               frame.warnings)
        evidence = None
        if heatmap and cams is not None and answer.prediction is not None:
            evidence = evidence_map(cams[index], model.rule.positive, answer.prediction.class_index)
        frame.timings.update(inference=share, postprocess=(time.perf_counter() - post_start) * 1000)
        writer.inbox.put(("ok", frame, answer, evidence))


def run_pipeline(source: Source, model: DeployedModel, sink: Sink, results: ResultsWriter,
                 options: RunOptions) -> Tuple[Outcome, StageClock]:
    outcome, clock = Outcome(), StageClock()
    batch_size = 1 if source.live else max(1, min(options.batch_size, model.backend.max_batch))
    pool = ThreadPoolExecutor(max(1, options.decode_workers), thread_name_prefix="decode")
    reader = _Reader(source, model.spec, model.gate, pool, depth=2 * options.decode_workers + batch_size,
                     full_display=options.full_resolution and sink.enabled)
    writer = _Writer(model, sink, results, options, outcome, clock)
    progress = tqdm(total=source.frame_count, unit="img", disable=(source.frame_count or 0) < 2 or None, leave=False)
    reader.start()
    writer.start()
    batch: List[Frame] = []
    try:
        while writer.error is None:
            if writer.stop_requested:
                outcome.interrupted = True
                break
            item = reader.outbox.get()
            if item is _END:
                break
            job, future = item
            try:
                batch.append(future.result())
            except (ImageDecodeError, OSError) as err:
                origin = source.origin(job)
                writer.inbox.put(("failed", origin, str(err) if isinstance(err, ImageDecodeError)
                                  else f"{origin}: {err}", {}))
            progress.update(1)
            if len(batch) >= batch_size or (reader.outbox.empty() and batch):
                _infer(model, batch, options.heatmap, writer)
                batch = []
        if batch and writer.error is None:
            _infer(model, batch, options.heatmap, writer)
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        reader.stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                reader.outbox.get(timeout=0.1)
            except queue.Empty:
                pass
        writer.inbox.put(_END)
        writer.join()
        pool.shutdown(wait=True)
        progress.close()
    for error in (writer.error, reader.error):
        if error is not None:
            raise error
    return outcome, clock
