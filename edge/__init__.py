"""Everything that runs on the device. Imports numpy, OpenCV and one inference back-end; never torch."""
