"""torch model -> ONNX graph in this toolkit's contract: ``input_0`` float32 [N, 3, R, R] in,
``output_0`` (and optionally ``cam_0``) out, a fixed opset, checked, with the model's record as
metadata_props.

Opset 13 (IR 7) by default: every TensorRT from 8.2 on parses it, 8.5 (JetPack 5.1) and 10.3 (JetPack
6.1/6.2) included, as does jetson-inference's own build of it. The TorchScript exporter is used because torch's dynamo exporter cannot go
below opset 18 (it silently keeps 18 when asked for 13).
"""
from __future__ import annotations

import inspect
import warnings
from typing import Sequence

import onnx
import torch
import torch.nn as nn

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import INPUT_NAME, OUTPUT_NAME, TOOLKIT, TOOLKIT_VERSION

DEFAULT_OPSET = 13


class ExportError(ToolkitError):
    """The export failed or did not verify."""


def export_graph(model: nn.Module, resolution: int, path: str, opset: int, dynamic_batch: bool,
                 outputs: Sequence[str] = (OUTPUT_NAME,)) -> onnx.ModelProto:
    """Export ``model`` to ``path`` and check the result; returns the loaded graph."""
    dummy = torch.zeros(1, 3, resolution, resolution)
    names = [INPUT_NAME, *outputs]
    axes = {name: {0: "batch"} for name in names} if dynamic_batch else None
    # torch 2.5 added the dynamo switch (and 2.9 made dynamo the default); before, TorchScript was all.
    choose = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        try:
            torch.onnx.export(model, (dummy,), path, opset_version=opset, input_names=[INPUT_NAME],
                              output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True, **choose)
        except Exception as err:  # torch.onnx raises several error types, each with a long graph dump
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise ExportError(f"torch cannot export this model at {resolution} px to ONNX opset {opset}: "
                              f"{reason}") from None
    graph = onnx.load(path)
    exported = {entry.domain: entry.version for entry in graph.opset_import}.get("", None)
    if exported != opset:
        raise ExportError(f"asked for opset {opset} but the exporter wrote opset {exported}")
    onnx.checker.check_model(graph)
    return graph


def write_metadata(graph: onnx.ModelProto, path: str, info: ModelInfo) -> None:
    """Replace the graph's metadata_props with the model's record and save it to ``path``."""
    del graph.metadata_props[:]
    for key, value in sorted(info.to_metadata().items()):
        graph.metadata_props.add(key=key, value=value)
    graph.producer_name, graph.producer_version = TOOLKIT, TOOLKIT_VERSION
    graph.doc_string = "Chest X-ray classifier; softmax probabilities in label order. Not a diagnostic device."
    onnx.save(graph, path)
