"""The TensorRT API the code uses, checked against every TensorRT it claims to support.

tests/data/tensorrt/ holds the Python API surface of TensorRT 8.5.2 (JetPack 5.1.x), 8.6.1, 10.3
(JetPack 6.1/6.2), 11.4 and TensorRT-RTX 1.7, recorded from NVIDIA's own sources: the binding sources
at each release tag, and dir() of the released wheels (each file names its sources). No TensorRT can
run here, so the code is checked against those records instead:
- every TensorRT member the code touches is listed in USED, found by reading the code (a new use
  fails until it is listed);
- a member without a guard must exist in every version; a guarded one in every version whose guard
  (a capability of edge/tensorrt/api.py, evaluated on that version's recorded module) lets it through,
  and the code must reach it only through that guard: a function that tests the capability, or a
  helper called only from such functions;
- members known to be broken in a supported version are not used at all.
"""
from __future__ import annotations

import ast
import glob
import json
import os
import types
from typing import Dict, List, Optional, Set, Tuple

import numpy as np
import pytest

from cxr_jetson.edge.tensorrt.api import MINIMUM_TENSORRT, TensorRT, TensorRTVersionError, numpy_dtype
from tests.conftest import REPO

RECORDS = sorted(glob.glob(os.path.join(REPO, "tests", "data", "tensorrt", "*.json")))
CODE = ["edge/tensorrt/api.py", "edge/tensorrt/builder.py", "edge/tensorrt/progress.py", "edge/backends/trt_backend.py"]
MODULE = "<module>"

# Names the code gives TensorRT objects -> their class.
RECEIVERS = {"engine": "ICudaEngine", "context": "IExecutionContext", "builder": "Builder", "config": "IBuilderConfig",
             "parser": "OnnxParser", "network": "INetworkDefinition", "profile": "IOptimizationProfile",
             "runtime": "Runtime", "tensor": "ITensor", "cache": "ITimingCache", "flags": "BuilderFlag",
             "capability": "ComputeCapability", "creation": "NetworkDefinitionCreationFlag", "layer": "ILayer"}
MODULE_NAMES = {"module", "trt_module"}

# (class, member) -> the TensorRT capability that guards it, or None when every version must have it.
USED: Dict[Tuple[str, str], Optional[str]] = {
    (MODULE, "Builder"): None, (MODULE, "Runtime"): None, (MODULE, "Logger"): None, (MODULE, "OnnxParser"): None,
    (MODULE, "BuilderFlag"): None, (MODULE, "MemoryPoolType"): None, (MODULE, "TensorIOMode"): None,
    (MODULE, "NetworkDefinitionCreationFlag"): None, (MODULE, "float32"): None,
    (MODULE, "IProgressMonitor"): "has_progress_monitor",
    (MODULE, "ComputeCapability"): "is_rtx",
    ("Logger", "ERROR"): None, ("Logger", "WARNING"): None, ("Logger", "INFO"): None, ("Logger", "VERBOSE"): None,
    ("BuilderFlag", "FP16"): "weakly_typed", ("BuilderFlag", "INT8"): "weakly_typed",
    ("BuilderFlag", "OBEY_PRECISION_CONSTRAINTS"): "weakly_typed",
    ("MemoryPoolType", "WORKSPACE"): None, ("MemoryPoolType", "TACTIC_SHARED_MEMORY"): "has_tactic_shared_memory",
    ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"): "needs_explicit_batch_flag",
    ("TensorIOMode", "OUTPUT"): None,
    ("Builder", "create_network"): None, ("Builder", "create_builder_config"): None,
    ("Builder", "create_optimization_profile"): None, ("Builder", "build_serialized_network"): None,
    ("IBuilderConfig", "set_flag"): None, ("IBuilderConfig", "set_memory_pool_limit"): None,
    ("IBuilderConfig", "add_optimization_profile"): None, ("IBuilderConfig", "create_timing_cache"): None,
    ("IBuilderConfig", "set_timing_cache"): None, ("IBuilderConfig", "get_timing_cache"): None,
    ("IBuilderConfig", "progress_monitor"): "has_progress_monitor",
    ("IBuilderConfig", "num_compute_capabilities"): "is_rtx", ("IBuilderConfig", "set_compute_capability"): "is_rtx",
    ("ComputeCapability", "CURRENT"): "is_rtx",
    ("IOptimizationProfile", "set_shape"): None,
    ("OnnxParser", "parse"): None, ("OnnxParser", "num_errors"): None, ("OnnxParser", "get_error"): None,
    ("ParserError", "desc"): None,
    ("INetworkDefinition", "num_inputs"): None, ("INetworkDefinition", "num_outputs"): None,
    ("INetworkDefinition", "get_input"): None, ("INetworkDefinition", "get_output"): None,
    ("INetworkDefinition", "num_layers"): None, ("INetworkDefinition", "get_layer"): None,
    ("ILayer", "name"): None, ("ILayer", "type"): None, ("ILayer", "num_outputs"): None, ("ILayer", "get_output"): None,
    ("ILayer", "precision"): "weakly_typed", ("ILayer", "set_output_type"): "weakly_typed",
    ("ITensor", "name"): None, ("ITensor", "shape"): None, ("ITensor", "dtype"): None,
    ("ITimingCache", "serialize"): None,
    ("Runtime", "deserialize_cuda_engine"): None,
    ("ICudaEngine", "num_io_tensors"): None, ("ICudaEngine", "get_tensor_name"): None,
    ("ICudaEngine", "get_tensor_shape"): None, ("ICudaEngine", "get_tensor_dtype"): None,
    ("ICudaEngine", "get_tensor_mode"): None, ("ICudaEngine", "create_execution_context"): None,
    ("IExecutionContext", "set_tensor_address"): None, ("IExecutionContext", "set_input_shape"): None,
    ("IExecutionContext", "execute_async_v3"): None,
    # What TensorRT calls on the subclass the code defines (progress.py).
    ("IProgressMonitor", "__init__"): "has_progress_monitor",
    ("IProgressMonitor", "phase_start"): "has_progress_monitor",
    ("IProgressMonitor", "step_complete"): "has_progress_monitor",
    ("IProgressMonitor", "phase_finish"): "has_progress_monitor",
}
# How a guard reads in the code, and the helpers only ever called under it.
GUARD_TOKENS = {"weakly_typed": "strongly_typed"}
GUARDED_HELPERS = {"has_progress_monitor": {"progress_monitor"}, "weakly_typed": {"_keep_float32"}}
# Present in a supported version but wrong there: never to be used.
BROKEN = {(MODULE, "nptype"): "TensorRT 8.5.2 maps BOOL to np.bool, which numpy 1.24 removed (fixed in 8.5.3)"}


def _record(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def recorded_tensorrt(record: dict) -> TensorRT:
    """A TensorRT whose module has exactly the recorded names and members (none of them callable here)."""
    module = types.ModuleType(record["module_name"])
    for name in record["module"]:
        setattr(module, name, type(name, (), dict.fromkeys(record["members"].get(name, []))))
    flavor = "tensorrt_rtx" if record["module_name"] == "tensorrt_rtx" else "tensorrt"
    return TensorRT(module, flavor, record["version"])


def _receiver(node: ast.expr) -> Optional[str]:
    """The TensorRT class an expression stands for in the code, or None."""
    if isinstance(node, ast.Name):
        return MODULE if node.id in MODULE_NAMES else RECEIVERS.get(node.id)
    if isinstance(node, ast.Attribute):
        if node.attr == "module" or (isinstance(node.value, ast.Name) and node.value.id == "self"):
            return MODULE if node.attr in MODULE_NAMES else RECEIVERS.get(node.attr)
        if _receiver(node.value) == MODULE:
            return node.attr
    return None


def _trees(paths=CODE) -> Dict[str, ast.Module]:
    trees = {}
    for path in paths:
        with open(os.path.join(REPO, path), encoding="utf-8") as handle:
            trees[path] = ast.parse(handle.read())
    return trees


def _uses(paths=CODE) -> List[Tuple[Tuple[str, str], List[ast.FunctionDef]]]:
    """Every TensorRT member read by the code, with the functions it is read in (innermost first)."""
    uses = []
    for tree in _trees(paths).values():
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            owner = _receiver(node.value) if isinstance(node, ast.Attribute) else None
            if owner is None:
                continue
            functions, current = [], node
            while current in parents:
                current = parents[current]
                if isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    functions.append(current)
            uses.append(((owner, node.attr), functions))
    return uses


def used_members(paths=CODE) -> Set[Tuple[str, str]]:
    """(class, member) for every attribute the code reads from a TensorRT object."""
    return {member for member, _ in _uses(paths)}


def _tests(function: ast.AST, token: str) -> bool:
    return any((isinstance(n, ast.Attribute) and n.attr == token) or (isinstance(n, ast.Name) and n.id == token)
               for n in ast.walk(function))


def _reached_only_under(guard: str, functions: List[ast.FunctionDef], paths=CODE) -> bool:
    token = GUARD_TOKENS.get(guard, guard)
    if any(_tests(function, token) for function in functions):
        return True
    helpers = {f.name for f in functions} & GUARDED_HELPERS.get(guard, set())
    if not helpers:
        return False
    callers = []
    for tree in _trees(paths).values():
        callers += [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and f.name not in helpers and any(isinstance(c, ast.Call) and getattr(c.func, "attr", getattr(
                        c.func, "id", None)) in helpers for c in ast.walk(f))]
    return bool(callers) and all(_tests(caller, token) for caller in callers)


def test_records_cover_every_supported_version():
    versions = {_record(path)["version"] for path in RECORDS}
    assert {"8.5.2", "8.6.1", "10.3.0"} <= versions and any(v.startswith("11.") for v in versions)
    assert all(tuple(int(p) for p in v.split(".")[:2]) >= MINIMUM_TENSORRT for v in versions if v.startswith("8"))


def test_every_tensorrt_member_the_code_uses_is_listed():
    unlisted = used_members() - set(USED) - {(MODULE, "__version__")}
    assert not unlisted, f"TensorRT members used but not in USED (add them with their guard): {sorted(unlisted)}"


def test_guarded_members_are_reached_only_through_their_guard():
    unguarded = sorted({f"{owner}.{member} ({USED[(owner, member)]})" for (owner, member), functions in _uses()
                        if USED.get((owner, member)) and not _reached_only_under(USED[(owner, member)], functions)})
    assert not unguarded, f"used without testing the capability that guards them: {unguarded}"


def test_no_member_broken_in_a_supported_version_is_used():
    assert not used_members() & set(BROKEN), [BROKEN[m] for m in used_members() & set(BROKEN)]


def test_int8_is_explicit_quantization_on_every_version():
    # Every supported TensorRT parses Q/DQ ONNX (since 8.0); the implicit calibrator, deprecated in 10.1 and
    # gone in 11 and RTX, is used nowhere.
    assert not [member for member in used_members() if any("calibrat" in name.lower() for name in member)]
    for trt in (recorded_tensorrt(_record(path)) for path in RECORDS):
        flags = trt.module.BuilderFlag
        assert trt.strongly_typed or (hasattr(flags, "INT8") and hasattr(flags, "FP16")), trt.label


@pytest.mark.parametrize("path", RECORDS, ids=[os.path.basename(p)[:-5] for p in RECORDS])
def test_every_member_is_there_or_guarded(path):
    trt = recorded_tensorrt(_record(path))
    capabilities = {"weakly_typed": not trt.strongly_typed}
    missing = []
    for (owner, member), guard in USED.items():
        if guard is not None and not (capabilities[guard] if guard in capabilities else getattr(trt, guard)):
            continue
        holder = trt.module if owner == MODULE else getattr(trt.module, owner, None)
        if holder is None or not hasattr(holder, member):
            missing.append(f"{owner}.{member}")
    assert not missing, f"{trt.label} lacks {missing}"


@pytest.mark.parametrize("path", RECORDS, ids=[os.path.basename(p)[:-5] for p in RECORDS])
def test_every_float_and_integer_tensor_type_has_a_numpy_buffer_type(path):
    record = _record(path)
    for name in ("FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"):
        assert name in record["members"]["DataType"]
        dtype = numpy_dtype(types.SimpleNamespace(name=name))
        assert isinstance(dtype, np.dtype) and np.zeros(2, dtype).nbytes > 0
    assert numpy_dtype(types.SimpleNamespace(name="BOOL")) == np.dtype(np.bool_)


def test_guards_say_what_each_version_can_do():
    by_version = {_record(p)["version"]: recorded_tensorrt(_record(p)) for p in RECORDS}
    old, ten = by_version["8.5.2"], by_version["10.3.0"]
    eleven = next(trt for version, trt in by_version.items() if version.startswith("11."))
    assert not old.has_tactic_shared_memory and not old.has_progress_monitor and old.needs_explicit_batch_flag
    assert ten.has_tactic_shared_memory and ten.has_progress_monitor and not ten.needs_explicit_batch_flag
    assert not old.strongly_typed and not ten.strongly_typed and eleven.strongly_typed
    assert not eleven.needs_explicit_batch_flag  # EXPLICIT_BATCH is gone in 11


def test_a_feature_the_version_lacks_is_a_one_line_error_before_any_call():
    old = next(recorded_tensorrt(_record(p)) for p in RECORDS if _record(p)["version"] == "8.5.2")
    with pytest.raises(TensorRTVersionError, match="--tactic-shared-memory needs TensorRT 10 or newer; this is "
                                                   "TensorRT 8.5.2"):
        old.set_tactic_shared_memory(config=None, nbytes=1 << 20)  # refused before the config is touched
