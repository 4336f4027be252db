"""The torch-free foundation every stage stands on: errors and command-line plumbing, contract names,
files, labels, decoding (DICOM included), the one preprocessing definition, the model contract, the
decision rule and the metric registry. Needs numpy and OpenCV (pydicom for DICOM); never torch."""
