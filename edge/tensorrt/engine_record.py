"""The sidecar written beside every engine, and the checks that keep a stale engine from running.

A TensorRT engine is only valid for the ONNX, the TensorRT version and the GPU it was built for.
jetson-inference users learned this from wrong results after retraining and "version tag does not
match" errors; here ``resnet18.fp16.b1.engine`` comes with ``resnet18.fp16.b1.engine.json``
recording all three (plus precision, batch profile, the engine's own size and sha256, and the
model's labels and preprocessing), and an engine is used only when every fact still holds. An INT8
engine is ``resnet18.int8.b1.engine``, built from ``resnet18.int8.onnx``, whose sha256 its sidecar holds.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.files import atomic_path, sha256_file
from cxr_jetson.core.names import INT8_ONNX_SUFFIX
from cxr_jetson.edge.tensorrt.cuda import GpuIdentity


class EngineRecordError(ToolkitError):
    """A sidecar that is missing or unreadable."""


def engine_path_for(onnx_path: str, precision: str, max_batch: int) -> str:
    """``models/pneumonia/resnet18.onnx`` -> ``models/pneumonia/resnet18.fp16.b1.engine``; the INT8 engine of
    ``resnet18.int8.onnx`` is ``resnet18.int8.b1.engine``, beside the FP16 and FP32 ones of ``resnet18.onnx``."""
    stem = os.path.splitext(onnx_path)[0]
    if precision == "int8" and onnx_path.lower().endswith(INT8_ONNX_SUFFIX):
        stem = onnx_path[:-len(INT8_ONNX_SUFFIX)]
    return f"{stem}.{precision}.b{max_batch}.engine"


def sidecar_path(engine_path: str) -> str:
    return f"{engine_path}.json"


@dataclass
class EngineRecord:
    onnx: str
    onnx_sha256: str
    tensorrt_flavor: str
    tensorrt_version: str
    precision: str
    batch: Dict[str, int]
    gpu: Optional[Dict[str, str]]          # the GPU it was built on; None for an offline (CPU-only) build
    target_compute_capabilities: List[str]  # an offline build's targets, e.g. ["SM86"]
    engine_bytes: int = 0
    engine_sha256: str = ""
    build_seconds: float = 0.0
    built_utc: str = ""
    model_metadata: Dict[str, str] = field(default_factory=dict)  # the ONNX's metadata_props

    def write(self, engine_path: str) -> None:
        with atomic_path(sidecar_path(engine_path)) as temporary, open(temporary, "w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle, indent=2, sort_keys=True)

    @classmethod
    def read(cls, engine_path: str) -> "EngineRecord":
        path = sidecar_path(engine_path)
        try:
            with open(path, encoding="utf-8") as handle:
                data: Dict[str, Any] = json.load(handle)
            return cls(**data)
        except FileNotFoundError:
            raise EngineRecordError(f"{engine_path} has no sidecar {os.path.basename(path)}; its ONNX, TensorRT "
                                    "version and GPU are unknown, so it is not used (rebuild it with trt_build.py)") from None
        except (OSError, ValueError, TypeError) as err:
            raise EngineRecordError(f"sidecar {path} is unreadable: {err}") from None


def _gpu_matches(record: EngineRecord, gpu: Optional[GpuIdentity]) -> Optional[str]:
    if gpu is None:
        return None  # nothing to compare against here; running it will need a GPU anyway
    if record.gpu is not None:
        if (record.gpu["name"], record.gpu["compute_capability"]) != (gpu.name, gpu.compute_capability):
            return (f"built for {record.gpu['name']} (SM {record.gpu['compute_capability']}), "
                    f"this is {gpu.name} (SM {gpu.compute_capability})")
        return None
    here = "SM" + gpu.compute_capability.replace(".", "")
    if record.target_compute_capabilities and here not in record.target_compute_capabilities:
        return f"built for {', '.join(record.target_compute_capabilities)}, this GPU is {here}"
    return None


def stale_reasons(engine_path: str, onnx_path: Optional[str], tensorrt_flavor: str, tensorrt_version: str,
                  gpu: Optional[GpuIdentity]) -> List[str]:
    """Why the engine at ``engine_path`` must not run here; empty when it may."""
    if not os.path.isfile(engine_path):
        return ["no engine built yet"]
    size = os.path.getsize(engine_path)
    if size == 0:
        return ["the engine file is empty (0 bytes)"]
    try:
        record = EngineRecord.read(engine_path)
    except EngineRecordError as err:
        return [str(err)]
    reasons = []
    if size != record.engine_bytes:
        reasons.append(f"the engine file has {size} bytes, {record.engine_bytes} were written (truncated?)")
    elif sha256_file(engine_path) != record.engine_sha256:
        reasons.append("the engine file's contents changed since it was built (corrupt?)")
    if onnx_path and record.onnx != os.path.basename(onnx_path):
        # e.g. an INT8 engine calibrated from resnet18.onnx by an older toolkit, where resnet18.int8.onnx is wanted
        reasons.append(f"built from {record.onnx}, not {os.path.basename(onnx_path)}")
    elif onnx_path and os.path.isfile(onnx_path) and sha256_file(onnx_path) != record.onnx_sha256:
        reasons.append(f"{os.path.basename(onnx_path)} changed since the engine was built (re-exported?)")
    if (record.tensorrt_flavor, record.tensorrt_version) != (tensorrt_flavor, tensorrt_version):
        reasons.append(f"built with {record.tensorrt_flavor} {record.tensorrt_version}, "
                       f"this is {tensorrt_flavor} {tensorrt_version}")
    mismatch = _gpu_matches(record, gpu)
    if mismatch:
        reasons.append(mismatch)
    return reasons
