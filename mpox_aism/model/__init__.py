"""What a network is: the architecture zoo, EfficientNet-Lite, fused backbones, ``model.pt`` load/save.

Shared by training (which fits networks), export (which converts them) and the torch parts of
inference (the torch backend, Grad-CAM). It needs torch; nothing on the ONNX Runtime / TensorRT
serving path imports it.
"""
