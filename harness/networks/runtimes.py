"""Whole-network dense baselines, each a callable on one input: PyTorch (eager, channels_last,
frozen TorchScript), ONNX Runtime on the exported model, and DeepSparse when the user has
installed it (it is never a dependency)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.errors import HarnessError
from harness.machine.cpus import widened_binding


@contextlib.contextmanager
def torch_threads(threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _threaded(run, threads: int):
    def call():
        with torch_threads(threads), torch.no_grad():
            return run()
    return call


def torch_variants(model: nn.Module, example: torch.Tensor, threads: int) -> dict:
    """PyTorch's dense ways of running the model: eager, channels_last, frozen TorchScript
    (whichever of them this model and build allow)."""
    model = model.eval()
    variants = {"torch_eager": _threaded(lambda: model(example), threads)}
    with torch.no_grad(), torch_threads(threads):
        last = example.contiguous(memory_format=torch.channels_last)
        channels_last = _copy_channels_last(model)
        variants["torch_channels_last"] = _threaded(lambda: channels_last(last), threads)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frozen = torch.jit.freeze(torch.jit.trace(model, example).eval())
                frozen(example)
            variants["torch_frozen"] = _threaded(lambda: frozen(example), threads)
        except Exception:  # TorchScript refuses some models; the other variants remain
            pass
    return variants


def _copy_channels_last(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copy = torch.load(buffer, weights_only=False)
    return copy.to(memory_format=torch.channels_last).eval()


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """The model as ONNX (opset 17), by PyTorch's TorchScript-based exporter."""
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (example,), str(path), dynamo=False,
                              input_names=["input"], output_names=["output"], opset_version=17)
    except Exception as exc:
        raise HarnessError(f"PyTorch could not export the model to ONNX: "
                           f"{str(exc).splitlines()[0]}") from None
    return path


def onnxruntime_session(path: Path, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with widened_binding():  # its threads start unbound
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnxruntime_runner(path: Path, example: torch.Tensor, threads: int):
    session = onnxruntime_session(path, threads)
    name = session.get_inputs()[0].name
    feed = {name: example.numpy()}
    return lambda: session.run(None, feed)[0]


def deepsparse_runner(path: Path, example: torch.Tensor, threads: int):
    """DeepSparse's engine on the ONNX file, or None where it is not installed."""
    if importlib.util.find_spec("deepsparse") is None:
        return None
    import deepsparse
    with widened_binding():
        engine = deepsparse.compile_model(str(path), batch_size=example.shape[0],
                                          num_cores=threads)
    data = [np.ascontiguousarray(example.numpy())]
    return lambda: engine(data)[0]


def dense_runners(model: nn.Module, example: torch.Tensor, threads: int,
                  workdir: Path | None = None) -> dict:
    """Every dense baseline available here, by name."""
    runners = torch_variants(model, example, threads)
    if importlib.util.find_spec("onnxruntime") is not None:
        directory = workdir or Path(tempfile.mkdtemp(prefix="spconv-e2e-"))
        path = export_onnx(model, example, directory / "model.onnx")
        runners["onnxruntime"] = onnxruntime_runner(path, example, threads)
        deepsparse = deepsparse_runner(path, example, threads)
        if deepsparse is not None:
            runners["deepsparse"] = deepsparse
    return runners
