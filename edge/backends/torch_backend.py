"""torch back-end, for x86 GPU machines without TensorRT (and as a CPU reference).

On CUDA the model runs in FP16 with channels-last memory and, for a fixed batch, as a captured CUDA
graph (one launch per batch instead of one per layer, which dominates at batch 1). On the CPU it
runs in FP32 eager mode. It reads the training checkpoint (``model_best.pth.tar``) through the model
package (cxr_jetson.networks: the checkpoint format and the deployable wrapper export uses too), so
it needs torch and torchvision; the other back-ends need neither.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

from cxr_jetson.core.model_files import locate_model
from cxr_jetson.core.names import CAM_NAME, GATE_NAME
from cxr_jetson.edge.backends import Backend, BackendError, BackendOptions


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: str, options: BackendOptions = BackendOptions(), cuda_graph: bool = True,
                 device: Optional[str] = None) -> None:
        try:
            import torch

            from cxr_jetson.networks.checkpoint import load_checkpoint
            from cxr_jetson.networks.deployable import deployment
            from cxr_jetson.networks.input_gate import gate_beside
        except ImportError as err:
            raise BackendError(f"the torch back-end needs torch and torchvision ({err}); "
                               "use --backend onnxruntime or tensorrt") from None
        self.torch = torch
        self.model_file = locate_model(model, ("checkpoint",))
        deployed = deployment(load_checkpoint(self.model_file), provenance={"checkpoint": os.path.basename(self.model_file)},
                              gate=gate_beside(self.model_file))
        self.info = deployed.info
        self.resolution = self.info.spec.resolution
        self.num_classes = len(self.info.labels)
        self.max_batch = options.batch_size
        self.torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.device = str(self.torch_device)
        on_gpu = self.torch_device.type == "cuda"
        self.precision = options.precision or ("fp16" if on_gpu else "fp32")
        if self.precision not in ("fp16", "fp32"):
            raise BackendError(f"the torch back-end runs fp16 or fp32, not {self.precision}")
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.model = deployed.network
        self.has_cam, self.has_gate = CAM_NAME in deployed.outputs, GATE_NAME in deployed.outputs
        self.model.to(self.torch_device, dtype=self.dtype, memory_format=torch.channels_last)
        self.graph = self._capture_graph() if on_gpu and cuda_graph else None
    def _capture_graph(self):
        torch = self.torch
        shape = (self.max_batch, 3, self.resolution, self.resolution)
        self.static_input = torch.zeros(shape, device=self.torch_device, dtype=self.dtype).contiguous(
            memory_format=torch.channels_last)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # warm-up outside the graph: cuDNN picks its kernels here
                self.model(self.static_input)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            self.static_outputs = self._as_tuple(self.model(self.static_input))
        return graph

    @staticmethod
    def _as_tuple(outputs) -> tuple:
        return outputs if isinstance(outputs, tuple) else (outputs,)

    def run_all(self, batch: np.ndarray) -> Tuple[np.ndarray, ...]:
        torch = self.torch
        count = len(batch)
        with torch.inference_mode():
            inputs = torch.from_numpy(batch).to(self.torch_device, dtype=self.dtype)
            if self.graph is None:
                outputs = self._as_tuple(self.model(inputs.contiguous(memory_format=torch.channels_last)))
            else:
                if count > self.max_batch:
                    raise BackendError(f"batch of {count} exceeds the captured CUDA graph's {self.max_batch}")
                self.static_input[:count].copy_(inputs)
                self.graph.replay()
                outputs = tuple(output[:count] for output in self.static_outputs)
            return tuple(output.float().cpu().numpy() for output in outputs)
