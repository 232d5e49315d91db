"""How a network runs on the box: the ``Classifier`` base and its backends, model metadata, class maps,
Grad-CAM.

The base class and the ONNX Runtime / TensorRT backends stand on ``contracts`` alone (the numpy
preprocessing, ``ModelMeta``, the heat-map rule); only the torch backend, the class-map wrapper and
Grad-CAM import torch and ``model``, and only when they are first used.
"""
