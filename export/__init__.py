"""Export and inference backends (ONNX, TensorRT, ONNX Runtime, Torch) and Grad-CAM.

Built by the backends issue. It depends on ``training`` for the labels, the model zoo and the one
``training.preprocess.preprocess`` function, which every backend must call.
"""
