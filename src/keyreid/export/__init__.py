"""Exporting trained models for deployment without keyreid's torch model code (ONNX)."""

from keyreid.export.onnx import DEFAULT_OPSET, export_onnx

__all__ = ["DEFAULT_OPSET", "export_onnx"]
