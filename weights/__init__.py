"""Shipped models (ONNX files with a Markdown model card beside each)."""
