"""ONNX Runtime's CPU convolution (MLAS), a one-node graph per layer with the weights as an
initializer: the other strong dense baseline. ONNX Runtime picks its instruction set at run
time and offers no cap, so below the host's level its rows are marked uncapped."""

from __future__ import annotations

import numpy as np

from harness.errors import HarnessError
from harness.kernels.base import KernelError, PreparedConv
from harness.machine.cpus import widened_binding
from harness.machine.hostinfo import detect_host


class OnnxRuntimeConv(PreparedConv):
    method = "onnxruntime"
    dense = True
    requires = ("onnxruntime", "onnx")

    @classmethod
    def fuses_relu_max(cls, relu_max: float) -> bool:
        return True  # a Clip node in place of the Relu

    def __init__(self, w, bias, spec, *, relu, threads, spin: bool = True, relu_max=None, **_):
        """``spin`` False: its threads sleep between calls instead of spinning, for layers
        of a network where many such sessions and other kernels take turns."""
        super().__init__(spec, relu=relu, threads=threads, relu_max=relu_max)
        try:
            import onnx
            import onnxruntime as ort
            from onnx import TensorProto, helper, numpy_helper
        except ImportError:
            raise HarnessError("method 'onnxruntime' needs ONNX Runtime and onnx: pip install "
                               "'sparseconv-harness[onnx]'") from None
        (ph, pw), inputs = spec.padding, ["x", "w"]
        initializers = [numpy_helper.from_array(w.copy(), "w")]
        if bias is not None:
            initializers.append(numpy_helper.from_array(bias.copy(), "b"))
            inputs.append("b")
        nodes = [helper.make_node("Conv", inputs, ["conv" if relu else "y"],
                                  strides=list(spec.stride), pads=[ph, pw, ph, pw],
                                  dilations=list(spec.dilation), group=spec.groups,
                                  kernel_shape=[spec.kernel_h, spec.kernel_w])]
        if relu and relu_max is not None:
            initializers += [numpy_helper.from_array(np.float32(v).reshape(()), name)
                             for name, v in (("lo", 0.0), ("hi", relu_max))]
            nodes.append(helper.make_node("Clip", ["conv", "lo", "hi"], ["y"]))
        elif relu:
            nodes.append(helper.make_node("Relu", ["conv"], ["y"]))
        graph = helper.make_graph(
            nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                          list(spec.input_shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(spec.output_shape))],
            initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            with widened_binding():  # its threads start unbound
                self._session = ort.InferenceSession(model.SerializeToString(), options,
                                                     providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise KernelError(f"ONNX Runtime refused the layer: {str(exc).splitlines()[0]}") from None
        self._versions = {"onnxruntime": ort.__version__, "onnx": onnx.__version__}
        self._binding = self._session.io_binding()  # made once: calls only rebind the buffers

    def _run(self, x, out):
        self._binding.bind_cpu_input("x", x)
        self._binding.bind_output("y", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        try:
            self._session.run_with_iobinding(self._binding)
        except Exception as exc:
            raise KernelError(f"ONNX Runtime failed: {str(exc).splitlines()[0]}") from None

    def describe(self) -> dict:
        # no cap exists: it runs at the widest level the host has
        return {**self._versions, "isa": detect_host().best_isa()}
