"""torch back-end, for x86 GPU machines without TensorRT (and as a CPU reference).

On CUDA the model runs in FP16 with channels-last memory and, for a fixed batch, as a captured CUDA
graph (one launch per batch instead of one per layer, which dominates at batch 1). On the CPU it
runs in FP32 eager mode. It reads the training checkpoint (``model_best.pth.tar``), so it needs
torch, torchvision and this toolkit's train package; the other back-ends need none of them.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

from edge.backends import Backend, BackendError


def _checkpoint_path(path: str) -> str:
    if os.path.isdir(path):
        path = os.path.join(path, "model_best.pth.tar")
    elif path.endswith((".onnx", ".engine")):
        path = os.path.join(os.path.dirname(path), "model_best.pth.tar")
    if not os.path.isfile(path):
        raise BackendError(f"the torch back-end needs a training checkpoint; {path} not found")
    return path


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model_path: str, precision: Optional[str] = None, max_batch: int = 1,
                 cuda_graph: bool = True, device: Optional[str] = None) -> None:
        try:
            import torch
            from train.checkpoint import load_checkpoint, model_info
            from train.model import ClassifierWithCam, model_from_checkpoint, supports_cam
        except ImportError as err:
            raise BackendError(f"the torch back-end needs torch and torchvision ({err}); "
                               "use --backend onnxruntime or tensorrt") from None
        self.torch = torch
        self.model_file = _checkpoint_path(model_path)
        checkpoint = load_checkpoint(self.model_file)
        info = model_info(checkpoint, provenance={"checkpoint": os.path.basename(self.model_file)})
        self.metadata = info.to_metadata()
        self.resolution = info.spec.resolution
        self.num_classes = len(info.labels)
        self.max_batch = max_batch
        self.torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.device = str(self.torch_device)
        on_gpu = self.torch_device.type == "cuda"
        self.precision = precision or ("fp16" if on_gpu else "fp32")
        if self.precision not in ("fp16", "fp32"):
            raise BackendError(f"the torch back-end runs fp16 or fp32, not {self.precision}")
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        model = model_from_checkpoint(checkpoint)
        self.has_cam = supports_cam(model)
        self.model = (ClassifierWithCam(model) if self.has_cam else torch.nn.Sequential(model, torch.nn.Softmax(dim=1)))
        self.model.eval()
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
