"""Whole networks: the catalog's architectures as PyTorch modules, model import (PyTorch
through torch.fx, ONNX through the onnx package), ``sparsify`` (a model rewritten to run its
convolutions with the sparse kernels where they win) and end-to-end timing. Needs PyTorch."""
