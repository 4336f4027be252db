"""trt_build.py and the GPU back-ends.

The builder runs for real here through TensorRT-RTX, which builds engines on a machine without a
GPU (it cannot run them), INT8 ones included, from an INT8 ONNX quantized by export/quantize.py.
Running an engine needs TensorRT and a GPU: those tests run where both are present and are skipped
elsewhere, with the reason.
"""
from __future__ import annotations

import json
import os
import shutil

import onnx
import pytest

from cxr_jetson.core.files import sha256_file
from cxr_jetson.core.model_files import ModelNotFoundError
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.edge.backends import BackendOptions, auto_backend
from cxr_jetson.edge.backends.trt_backend import _engine_for
from cxr_jetson.edge.parity import compare
from cxr_jetson.edge.tensorrt.api import TensorRTUnavailable, load_tensorrt
from cxr_jetson.edge.tensorrt.builder import onnx_for
from cxr_jetson.edge.tensorrt.cuda import CudaError, current_gpu, open_cuda
from cxr_jetson.edge.tensorrt.engine_record import EngineRecord, engine_path_for
from cxr_jetson.export.quantize import calibration_images, quantize, write_record
from tests.conftest import run_script

try:
    RTX = load_tensorrt("tensorrt_rtx")
except TensorRTUnavailable as missing:
    RTX, RTX_MISSING = None, str(missing)
else:
    RTX_MISSING = ""
needs_rtx = pytest.mark.skipif(RTX is None, reason=f"TensorRT-RTX (the offline builder) is not installed: {RTX_MISSING}")
GPU = current_gpu()
try:
    REAL_TRT = load_tensorrt("tensorrt")
except TensorRTUnavailable:
    REAL_TRT = None
needs_trt_and_gpu = pytest.mark.skipif(REAL_TRT is None or GPU is None,
                                       reason="running an engine needs TensorRT and a CUDA GPU (a Jetson, or an "
                                              "x86 GPU with TensorRT); this machine has "
                                              f"{'no TensorRT' if REAL_TRT is None else 'TensorRT'} and "
                                              f"{'no GPU' if GPU is None else GPU.name}")
OFFLINE_TARGET = ["--compute-capability", "SM86"]


@pytest.fixture
def model_copy(exported_onnx, tmp_path) -> str:
    """A private model folder (ONNX + labels) a test may rebuild, damage or re-export into."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("resnet18.onnx", "labels.txt"):
        shutil.copy(os.path.join(os.path.dirname(exported_onnx), name), folder / name)
    return str(folder)


def _build(model_dir: str, *extra: str):
    return run_script("trt_build.py", "--model-dir", model_dir, *OFFLINE_TARGET, *extra,
                      env={"XDG_CACHE_HOME": os.path.join(model_dir, "cache")})


def _quantize(fp32_onnx: str, output: str, images: str, form: str = "tensorrt", count: int = 6) -> str:
    """The INT8 ONNX onnx_export.py --int8 writes (Q/DQ from ONNX Runtime's quantizer, its record in the
    metadata), calibrated on ``count`` real images; the accuracy guard is export's business, not tested here."""
    spec = ModelInfo.from_metadata({p.key: p.value for p in onnx.load(fp32_onnx).metadata_props}).spec
    write_record(output, quantize(fp32_onnx, output, calibration_images(images, spec, count), spec, form))
    return output


@pytest.fixture(scope="module")
def int8_onnx(exported_onnx, prepared_data, tmp_path_factory) -> str:
    """The TensorRT-form INT8 ONNX of the session's model, made once per module."""
    output = str(tmp_path_factory.mktemp("int8") / "resnet18.int8.onnx")
    return _quantize(exported_onnx, output, os.path.join(prepared_data, "train"))


@pytest.fixture
def quantized_copy(model_copy, int8_onnx) -> str:
    """model_copy with its INT8 ONNX beside the FP32 one, as onnx_export.py --int8 leaves a model folder."""
    shutil.copy(int8_onnx, os.path.join(model_copy, "resnet18.int8.onnx"))
    return model_copy


@needs_rtx
def test_builds_fp16_and_fp32_engines_with_a_truthful_sidecar(model_copy):
    onnx_path = os.path.join(model_copy, "resnet18.onnx")
    for precision in ("fp16", "fp32"):
        result = _build(model_copy, "--precision", precision)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "network input 'input_0' shape (1, 3, 64, 64)" in result.stdout
        engine = engine_path_for(onnx_path, precision, 1)
        record = EngineRecord.read(engine)
        assert record.precision == precision and record.tensorrt_flavor == "tensorrt_rtx"
        assert record.batch == {"min": 1, "opt": 1, "max": 1} and record.target_compute_capabilities == ["SM86"]
        assert record.gpu is None  # built offline, for the named target
        assert record.engine_bytes == os.path.getsize(engine)
        assert json.loads(record.model_metadata["cxr.labels"]) == ["NORMAL", "PNEUMONIA"]
        assert record.onnx_sha256 == sha256_file(onnx_path)
    # FP16 weights: about half the size of the FP32 engine.
    sizes = {p: os.path.getsize(engine_path_for(onnx_path, p, 1)) for p in ("fp16", "fp32")}
    assert sizes["fp16"] < 0.7 * sizes["fp32"]
    again = _build(model_copy)
    assert again.returncode == 0 and "using cached engine" in again.stdout


@needs_rtx
def test_re_exported_onnx_makes_the_engine_stale(model_copy, trained_model_dir):
    assert _build(model_copy).returncode == 0
    assert _build(model_copy, "--check").returncode == 0
    export = run_script("onnx_export.py", "--input", os.path.join(trained_model_dir, "model_best.pth.tar"),
                        "--output", os.path.join(model_copy, "resnet18.onnx"))
    assert export.returncode == 0, export.stderr  # new provenance timestamp: new bytes, new sha256
    check = _build(model_copy, "--check")
    assert check.returncode == 1 and "changed since the engine was built" in check.stdout
    rebuilt = _build(model_copy)
    assert rebuilt.returncode == 0 and "building" in rebuilt.stdout and "re-exported" in rebuilt.stdout
    assert _build(model_copy, "--check").returncode == 0


@needs_rtx
@pytest.mark.parametrize("damage, message", [("truncate", "truncated"), ("empty", "empty (0 bytes)"),
                                             ("sidecar", "no sidecar")])
def test_damaged_engines_are_detected_and_rebuilt(model_copy, damage, message):
    assert _build(model_copy).returncode == 0
    engine = engine_path_for(os.path.join(model_copy, "resnet18.onnx"), "fp16", 1)
    if damage == "sidecar":
        os.remove(engine + ".json")
    else:
        data = open(engine, "rb").read()
        open(engine, "wb").write(b"" if damage == "empty" else data[: len(data) // 2])
    check = _build(model_copy, "--check")
    assert check.returncode == 1 and message in check.stdout
    assert _build(model_copy).returncode == 0 and _build(model_copy, "--check").returncode == 0


@needs_rtx
def test_dynamic_batch_profile(trained_model_dir, prepared_data, tmp_path):
    folder = tmp_path / "dynamic"
    export = run_script("onnx_export.py", "--input", os.path.join(trained_model_dir, "model_best.pth.tar"),
                        "--output", str(folder / "resnet18.onnx"), "--dynamic-batch")
    assert export.returncode == 0, export.stderr
    result = _build(str(folder), "--max-batch", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    record = EngineRecord.read(engine_path_for(str(folder / "resnet18.onnx"), "fp16", 4))
    assert record.batch == {"min": 1, "opt": 4, "max": 4}
    # INT8 too: the quantized copy keeps the dynamic batch, and no calibration profile is needed.
    _quantize(str(folder / "resnet18.onnx"), str(folder / "resnet18.int8.onnx"), os.path.join(prepared_data, "train"))
    result = _build(str(folder), "--max-batch", "4", "--precision", "int8")
    assert result.returncode == 0, result.stdout + result.stderr
    record = EngineRecord.read(str(folder / "resnet18.int8.b4.engine"))
    assert record.batch == {"min": 1, "opt": 4, "max": 4} and record.precision == "int8"


@needs_rtx
def test_bad_inputs_fail_in_one_line_and_leave_nothing_behind(model_copy, tmp_path):
    not_onnx = tmp_path / "notes" / "resnet18.onnx"
    not_onnx.parent.mkdir()
    not_onnx.write_text("this is not a model")
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    graph = onnx.load(os.path.join(model_copy, "resnet18.onnx"))
    old = graph.graph.input[0].name
    graph.graph.input[0].name = "data"  # a Caffe-style input name
    for node in graph.graph.node:
        node.input[:] = ["data" if name == old else name for name in node.input]
    onnx.save(graph, str(renamed / "resnet18.onnx"))
    cases = [
        (str(not_onnx.parent), (), "is not an ONNX model"),
        (str(renamed), (), "take input_0 and give output_0"),
        (model_copy, ("--max-batch", "4"), "fixed batch of 1"),
        (model_copy, ("--tactic-shared-memory", "0"), "could not build the engine"),
        (model_copy, ("--precision", "int8"), "no INT8 model resnet18.int8.onnx beside"),
        (model_copy, ("--precision", "int8", "--onnx", os.path.join(model_copy, "resnet18.onnx")),
         "no INT8 model resnet18.int8.onnx beside"),
    ]
    for folder, extra, message in cases:
        before = set(os.listdir(folder))
        result = _build(folder, *extra)
        assert result.returncode == 2, (extra, result.stdout, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert message in last and last.startswith("trt_build.py: error:"), (extra, result.stderr)
        assert "Traceback" not in result.stderr
        assert set(os.listdir(folder)) - before <= {"cache"}, f"left behind: {set(os.listdir(folder)) - before}"


@needs_rtx
def test_offline_build_without_a_target_says_what_to_pass(model_copy):
    if GPU is not None:
        pytest.skip("a GPU is present: TensorRT-RTX builds for it without a named target")
    result = run_script("trt_build.py", "--model-dir", model_copy)
    assert result.returncode == 2 and "--compute-capability" in result.stderr


@needs_rtx
def test_int8_engine_from_the_quantized_onnx(quantized_copy):
    fp32, int8 = (os.path.join(quantized_copy, name) for name in ("resnet18.onnx", "resnet18.int8.onnx"))
    for precision in ("fp16", "int8"):
        result = _build(quantized_copy, "--precision", precision)
        assert result.returncode == 0, result.stdout + result.stderr
    engines = {p: engine_path_for(fp32 if p == "fp16" else int8, p, 1) for p in ("fp16", "int8")}
    assert engines["int8"] == os.path.join(quantized_copy, "resnet18.int8.b1.engine")
    records = {p: EngineRecord.read(path) for p, path in engines.items()}
    assert (records["fp16"].precision, records["fp16"].onnx) == ("fp16", "resnet18.onnx")
    assert (records["int8"].precision, records["int8"].onnx) == ("int8", "resnet18.int8.onnx")
    assert records["int8"].onnx_sha256 == sha256_file(int8) != records["fp16"].onnx_sha256
    assert json.loads(records["int8"].model_metadata["cxr.quantization"])["form"] == "tensorrt"
    assert records["int8"].engine_bytes < records["fp16"].engine_bytes  # INT8 weights: a quarter of FP32's
    named = run_script("trt_build.py", "--onnx", int8, "--precision", "int8", *OFFLINE_TARGET,
                       env={"XDG_CACHE_HOME": os.path.join(quantized_copy, "cache")})
    assert named.returncode == 0 and f"using cached engine {engines['int8']}" in named.stdout, named.stderr
    # The TensorRT back-end (classify.py --backend tensorrt) picks the same engines; build=False: nothing is built.
    for model, precision, engine in ((fp32, "int8", "int8"), (int8, None, "int8"), (fp32, None, "fp16")):
        assert _engine_for(model, BackendOptions(precision=precision, build=False), RTX, None) == engines[engine]


@needs_rtx
def test_a_re_quantized_or_old_calibrated_int8_engine_is_rebuilt(quantized_copy, prepared_data):
    int8 = os.path.join(quantized_copy, "resnet18.int8.onnx")
    assert _build(quantized_copy, "--precision", "int8").returncode == 0
    _quantize(os.path.join(quantized_copy, "resnet18.onnx"), int8, os.path.join(prepared_data, "train"), count=3)
    check = _build(quantized_copy, "--precision", "int8", "--check")
    assert check.returncode == 1 and "resnet18.int8.onnx changed since the engine was built" in check.stdout
    # An INT8 engine an older toolkit calibrated from resnet18.onnx has the same name: its sidecar gives it away.
    assert _build(quantized_copy).returncode == 0
    engine = os.path.join(quantized_copy, "resnet18.int8.b1.engine")
    for suffix in ("", ".json"):
        shutil.copy(os.path.join(quantized_copy, "resnet18.fp16.b1.engine") + suffix, engine + suffix)
    check = _build(quantized_copy, "--precision", "int8", "--check")
    assert check.returncode == 1 and "built from resnet18.onnx, not resnet18.int8.onnx" in check.stdout
    rebuilt = _build(quantized_copy, "--precision", "int8")
    assert rebuilt.returncode == 0 and EngineRecord.read(engine).onnx_sha256 == sha256_file(int8)
    assert _build(quantized_copy, "--check").returncode == 0  # the FP16 engine is untouched


@needs_rtx
def test_int8_onnx_tensorrt_cannot_build_is_refused_in_one_line(quantized_copy, prepared_data, tmp_path):
    x86 = tmp_path / "x86"
    x86.mkdir()
    fp32 = shutil.copy(os.path.join(quantized_copy, "resnet18.onnx"), x86 / "resnet18.onnx")
    _quantize(str(fp32), str(x86 / "resnet18.int8.onnx"), os.path.join(prepared_data, "train"), form="x86")
    unrecorded = onnx.load(str(x86 / "resnet18.int8.onnx"))  # as another quantizer would leave it: no record
    kept = [prop for prop in unrecorded.metadata_props if prop.key != "cxr.quantization"]
    del unrecorded.metadata_props[:]
    unrecorded.metadata_props.extend(kept)
    onnx.save(unrecorded, str(tmp_path / "bare.int8.onnx"))
    cases = [(str(x86), ("--precision", "int8"), ("in the x86 INT8 form", "--int8-form tensorrt")),
             (str(x86), ("--precision", "int8", "--onnx", str(tmp_path / "bare.int8.onnx")), ("in the x86 INT8 form",)),
             (quantized_copy, ("--onnx", os.path.join(quantized_copy, "resnet18.int8.onnx")),
              ("is quantized (INT8, Q/DQ nodes): build it with --precision int8",))]
    for folder, extra, messages in cases:
        before = set(os.listdir(folder))
        result = _build(folder, *extra)
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 2 and last.startswith("trt_build.py: error:"), result.stderr
        assert all(message in last for message in messages), last
        assert "Traceback" not in result.stderr
        assert not {name for name in set(os.listdir(folder)) - before if name.endswith(".engine")}


@pytest.mark.parametrize("flag, value", [("--calibration-images", "data/pneumonia/val"), ("--calibration-count", "64")])
def test_the_implicit_calibration_flags_point_to_the_int8_export(model_copy, flag, value):
    result = run_script("trt_build.py", "--model-dir", model_copy, "--precision", "int8", flag, value)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith(f"trt_build.py: error: {flag} is gone"), result.stderr
    assert "python3 onnx_export.py --model-dir DIR --int8" in last


def test_int8_builds_the_quantized_onnx_beside_the_model(quantized_copy):
    fp32, int8 = (os.path.join(quantized_copy, name) for name in ("resnet18.onnx", "resnet18.int8.onnx"))
    assert onnx_for(quantized_copy, "int8") == onnx_for(fp32, "int8") == onnx_for(int8, "int8") == int8
    assert onnx_for(quantized_copy, "fp16") == fp32  # the INT8 ONNX is the FP32 model's copy, not a second model
    assert engine_path_for(fp32, "fp16", 1) == os.path.join(quantized_copy, "resnet18.fp16.b1.engine")
    assert engine_path_for(int8, "int8", 4) == os.path.join(quantized_copy, "resnet18.int8.b4.engine")
    os.remove(int8)
    with pytest.raises(ModelNotFoundError, match="onnx_export.py --model-dir .* --int8"):
        onnx_for(quantized_copy, "int8")


def test_tensorrt_backend_without_a_gpu_is_a_clear_error(exported_onnx, prepared_data):
    if GPU is not None:
        pytest.skip(f"this machine has a GPU ({GPU.name})")
    result = run_script("classify.py", os.path.join(prepared_data, "val"), "--model",
                        os.path.dirname(exported_onnx), "--backend", "tensorrt")
    assert result.returncode == 2, result.stdout + result.stderr  # not 139: no TensorRT runtime was created
    assert ("TensorRT is not available" in result.stderr or "CUDA is not usable here" in result.stderr)
    assert "Traceback" not in result.stderr


def test_auto_backend_picks_onnxruntime_without_a_gpu():
    if GPU is not None:
        pytest.skip(f"this machine has a GPU ({GPU.name})")
    assert auto_backend() == "onnxruntime"
    with pytest.raises(CudaError, match="CUDA is not usable here"):
        open_cuda()


def test_torch_backend_matches_onnx_runtime(exported_onnx, prepared_data):
    report = compare(os.path.join(prepared_data, "val"), os.path.dirname(exported_onnx), "torch:fp32", "onnxruntime")
    assert report["images"] >= 6 and report["decision_agreement"] == 1.0
    assert report["max_abs_difference"] < 1e-5


def test_parity_tool_command(exported_onnx, prepared_data, tmp_path):
    output = tmp_path / "parity.json"
    result = run_script("-m", "cxr_jetson.edge.parity", os.path.join(prepared_data, "val"), "--model",
                        os.path.dirname(exported_onnx), "--a", "torch", "--b", "onnxruntime", "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "decisions agree on 100.00%" in result.stdout
    assert json.loads(output.read_text())["flips"] == []


@needs_trt_and_gpu
def test_engine_runs_and_agrees_with_onnx_runtime(model_copy, prepared_data):
    report = compare(os.path.join(prepared_data, "val"), model_copy, "tensorrt:fp16", "onnxruntime")
    assert report["decision_agreement"] >= 0.95 and report["max_abs_difference"] < 0.02
    fp32 = compare(os.path.join(prepared_data, "val"), model_copy, "tensorrt:fp32", "onnxruntime")
    assert fp32["max_abs_difference"] < 1e-3


@needs_trt_and_gpu
def test_classify_on_the_gpu_builds_then_reuses_the_engine(model_copy, prepared_data, tmp_path):
    first = run_script("classify.py", os.path.join(prepared_data, "val"), str(tmp_path / "a"), "--model", model_copy,
                       "--backend", "tensorrt")
    assert first.returncode == 0 and "tensorrt" in first.stdout
    second = run_script("classify.py", os.path.join(prepared_data, "val"), "--model", model_copy,
                        "--backend", "tensorrt", "--no-build")
    assert second.returncode == 0 and "using cached engine" in second.stdout


# Every TensorRT call the builder and the name-based runtime make, checked against the installed
# module: a renamed or misspelt API fails here, not first on a Jetson.
_API = {
    "Builder": ["create_builder_config", "create_optimization_profile", "build_serialized_network", "create_network"],
    "IBuilderConfig": ["set_memory_pool_limit", "add_optimization_profile", "set_flag"],
    "IOptimizationProfile": ["set_shape"],
    "OnnxParser": ["parse", "num_errors", "get_error"],
    "Runtime": ["deserialize_cuda_engine"],
    "ICudaEngine": ["num_io_tensors", "get_tensor_name", "get_tensor_shape", "get_tensor_dtype", "get_tensor_mode",
                    "create_execution_context"],
    "IExecutionContext": ["set_tensor_address", "set_input_shape", "execute_async_v3"],
}


@needs_rtx
def test_the_tensorrt_api_the_code_uses_exists():
    missing = [f"{cls}.{name}" for cls, names in _API.items() for name in names
               if not hasattr(getattr(RTX.module, cls), name)]
    assert not missing
    assert RTX.strongly_typed and RTX.has_progress_monitor
    assert hasattr(RTX.module, "nptype") and hasattr(RTX.module.TensorIOMode, "OUTPUT")
    assert hasattr(RTX.module.MemoryPoolType, "TACTIC_SHARED_MEMORY")
