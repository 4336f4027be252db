"""TensorRT on the device: which version is installed and what it can do (api), the CUDA calls
(cuda), the engine builder and its helpers (builder, fp16_onnx, progress) and the sidecar that
links an engine to its ONNX, TensorRT and GPU (engine_record). Engines are built on the device that
runs them, so the builder lives beside the runtime it serves; the two share only the engine file
and its sidecar."""
