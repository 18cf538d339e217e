"""PyTorch's CPU convolution (oneDNN) with the weights reordered once into oneDNN's blocked
layout, the way frozen inference graphs run it: the strongest dense convolution available."""

from __future__ import annotations

import functools
import os
import re
import sys
import tempfile

from harness.errors import HarnessError
from harness.machine.caps import onednn_level
from harness.kernels.base import KernelError, PreparedConv


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def onednn_available() -> bool:
    torch = torch_or_none()
    return bool(torch is not None and torch.backends.mkldnn.is_available())


class OneDNNConv(PreparedConv):
    method = "onednn"
    dense = True
    requires = ("torch",)

    @classmethod
    def available(cls) -> bool:
        return onednn_available()

    def __init__(self, w, bias, spec, *, relu, threads, relu_max=None, **_):
        super().__init__(spec, relu=relu, threads=threads, relu_max=relu_max)
        torch = torch_or_none()
        if torch is None or not torch.backends.mkldnn.is_available():
            raise HarnessError("method 'onednn' needs PyTorch with oneDNN: "
                               "pip install 'sparseconv-harness[torch]'")
        self.torch = torch
        self._args = (list(spec.padding), list(spec.stride), list(spec.dilation), spec.groups)
        with torch.no_grad():
            self._weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
                torch.from_numpy(w.copy()).to_mkldnn(), *self._args, list(spec.input_shape))
        self._bias = None if bias is None else torch.from_numpy(bias.copy())
        self._attr = "relu" if relu else "none"

    def _run(self, x, out):
        torch = self.torch
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                y = torch.ops.mkldnn._convolution_pointwise(
                    torch.from_numpy(x), self._weight, self._bias, *self._args,
                    self._attr, [], "")
        except RuntimeError as exc:
            raise KernelError(f"oneDNN convolution failed: {str(exc).splitlines()[0]}") from None
        finally:
            torch.set_num_threads(previous)
        out[...] = y.numpy()

    def describe(self) -> dict:
        torch = self.torch
        reported = onednn_isa()
        return {"torch": torch.__version__,
                "onednn": ".".join(map(str, torch.backends.mkldnn.version()))
                if hasattr(torch.backends.mkldnn, "version") else "unknown",
                "onednn_isa": reported, "isa": onednn_level(reported)}


@functools.lru_cache(maxsize=1)
def onednn_isa() -> str | None:
    """oneDNN's own report of the instruction set it runs at in this process (from its
    verbose output, read off file descriptor 1 while one small convolution runs)."""
    torch = torch_or_none()
    if torch is None:
        return None
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        try:
            with torch.no_grad(), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                torch.mkldnn_convolution(torch.ones(1, 8, 5, 5), torch.ones(8, 8, 3, 3), None,
                                         [1, 1], [1, 1], [1, 1], 1)
        except (RuntimeError, AttributeError):
            pass
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    match = re.search(r"info,cpu,isa:([^\n,]+)", text)
    return match.group(1).strip() if match else None
