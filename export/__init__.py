"""Export and inference backends (ONNX, TensorRT, ONNX Runtime, Torch), class maps and Grad-CAM.

The ``Classifier`` base and the ONNX Runtime / TensorRT backends stand on ``contracts`` alone (the
numpy preprocessing every backend calls, ``ModelMeta``, the heat-map normalisation); the exporters,
the torch backend and Grad-CAM also use ``training`` (the model zoo and ``model.pt``).
"""
