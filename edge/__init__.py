"""The device runtime: the runner (classify.py), its sources, sinks and pipeline, the inference back-ends
and TensorRT (engines are built on the device). Imports numpy, OpenCV and one inference back-end;
never torch, except the optional torch back-end."""
