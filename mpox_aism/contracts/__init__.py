"""The floor every layer stands on, and the only one serving needs: no torch, no training stack.

What must mean the same thing in training, export and on the edge box lives here once: the label
order, the numpy half of the one preprocessing function, how an image file is found and decoded,
``ModelMeta`` (what a backend must know about a network), the decision states and the threshold
rule. It imports only the standard library, numpy and OpenCV, so an ONNX Runtime or TensorRT box
does not carry torch to check a dtype (``tests/contracts/test_floor.py`` proves it).
"""
