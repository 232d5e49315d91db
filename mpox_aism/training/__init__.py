"""Training side of mpox-aism: data, augmentation, model zoo, training, evaluation, cross-validation.

It builds on ``mpox_aism/contracts/`` (label order, the numpy preprocessing, image loading, the decision rule)
like every other layer; nothing on the serving path imports it, so an ONNX Runtime or TensorRT box
never needs torch.
"""
