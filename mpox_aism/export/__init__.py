"""How a network is converted: ONNX export with its parity check, TensorRT engine build.

A training-side tool (it loads ``model.pt`` with torch); the runtime that serves the result lives in
``inference``.
"""
