"""Export: checkpoint -> ONNX (onnx_export), ONNX -> TensorRT engine (on the device)."""
