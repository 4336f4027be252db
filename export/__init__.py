"""Export: checkpoint -> verified, self-describing ONNX (onnx_export.py). Engines are built from the ONNX on
the device, by edge/tensorrt/."""
