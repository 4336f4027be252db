"""Data set tools: import the Kaggle/Mendeley chest X-ray download, and generate a synthetic demo set.

Data sets themselves live in data/<name>/ and are never committed.
"""
