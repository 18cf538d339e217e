"""Where a network comes from: the catalog (``resnet50``), a Python file that builds a PyTorch
model (``net.py`` or ``net.py:function``), or an ONNX file (``net.onnx``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from harness.errors import HarnessError

PYTHON_FUNCTION = "model"  # what a model file defines unless its spec names another function


def is_onnx(spec: str) -> bool:
    return spec.lower().endswith(".onnx")


def network_name(spec: str) -> str:
    """The name rows and reports give the network: the catalog name or the file's stem."""
    return Path(spec.split(":")[0]).stem if spec.split(":")[0].endswith((".py", ".onnx")) else spec


def _python_model(spec: str, batch: int):
    path_text, _, function = spec.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise HarnessError(f"{path}: model file not found")
    function = function or PYTHON_FUNCTION
    module_name = f"spconv_user_model_{abs(hash(str(path.resolve())))}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module
    try:
        loader.loader.exec_module(module)
    except Exception as exc:
        raise HarnessError(f"{path}: importing it failed: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise HarnessError(f"{path}: defines no function {function!r} (give FILE.py:FUNCTION; "
                           "it returns (model, example_input))")
    try:
        made = factory(batch=batch)
    except TypeError:
        made = factory()
    if not (isinstance(made, tuple) and len(made) == 2):
        raise HarnessError(f"{path}:{function}() must return (model, example_input)")
    return made


def torch_model(spec: str, batch: int = 1, seed: int = 0):
    """(name, model, example input) of a catalog network, a Python model file or an ONNX file
    (rebuilt as a PyTorch module, harness.networks.onnx_torch)."""
    from harness.networks.architectures import ARCHITECTURES, build

    if spec in ARCHITECTURES:
        model, example = build(spec, seed=seed, batch=batch)
    elif spec.split(":")[0].endswith(".py"):
        model, example = _python_model(spec, batch)
    elif is_onnx(spec):
        from harness.networks.onnx_torch import onnx_module
        model, example = onnx_module(spec, batch, seed=seed)
    else:
        raise HarnessError(f"--model: {spec!r} is neither a catalog network "
                           f"({', '.join(ARCHITECTURES)}), a .py model file nor an .onnx file")
    import torch
    if not isinstance(model, torch.nn.Module) or not isinstance(example, torch.Tensor):
        raise HarnessError(f"{spec}: expected a torch.nn.Module and an example tensor")
    return network_name(spec), model.eval(), example


def model_convolutions(spec: str, batch: int = 1):
    """(name, convolutions, notes) of any model source."""
    if is_onnx(spec):
        from harness.networks.onnx_import import import_onnx
        convs, notes = import_onnx(spec)
        return network_name(spec), convs, notes
    from harness.networks.torch_graph import import_torch
    name, model, example = torch_model(spec, batch)
    convs, notes = import_torch(model, example)
    return name, convs, notes
