"""harness.sparsify: a PyTorch model rewritten so that each convolution (BatchNorm folded in,
bias and ReLU fused) runs the sparse kernels where they measure faster than dense, and the
fastest dense convolution (PyTorch's, or ONNX Runtime's or oneDNN's where installed)
elsewhere; shortcut additions fuse into the pointwise kernel, max pooling and global average
pooling run in C, every other operation stays in PyTorch."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import fx, nn

from harness import kernels
from harness.conv.verify import expected_output, verify
from harness.errors import HarnessError
from harness.kernels import native
from harness.machine.hostinfo import detect_host
from harness.networks.layers import ModelConv
from harness.networks.memory import activation_buffer, share_buffers
from harness.networks.pooling import POOLS, replace_pools
from harness.networks.runtimes import torch_threads
from harness.networks.torch_graph import (conv_chains, fused_relu_max, model_conv,
                                          residual_adds, trace)
from harness.sweep.tuning import tuned_plan
from harness.timing import interleaved_medians, measure

CHOICES = ("auto", "sparse", "dense")
TUNE_MODES = ("cached", "search")
DECIDE_MIN_TIME_S = 0.01  # per sample when timing each way of running a layer on first use
# Ways of running a layer that timed alone within this factor of its fastest are timed again
# inside the network, where caches hold the other layers' data: ONNX Runtime ran MobileNetV2's
# depthwise layers 2-3x slower there than alone, the direct kernel 1.3-2x.
IN_NETWORK_WITHIN = 3.0
IN_NETWORK_CALLS = 5      # profiled calls of the whole network per way of running
SPARSE, TORCH = "sparse", "torch"
# Dense libraries a layer may run on instead of PyTorch's convolution, where installed: the
# whole network is judged against ONNX Runtime, so its dense layers may use it too.
DENSE_LIBRARIES = ("onnxruntime", "onednn")


@dataclass
class LayerTimes:
    """What one fused convolution measured: the timings that chose how it runs and, in
    profiled calls, its time."""
    decided: dict = field(default_factory=dict)  # runner -> seconds per call on the example
    in_network: dict = field(default_factory=dict)  # runner -> seconds per call in the network
    calls: int = 0
    total_s: float = 0.0      # forward() wall time over profiled calls
    kernel_s: float = 0.0     # of which the convolution itself


class Run(NamedTuple):
    """A fused layer's prepared kernel for one input shape, the output buffer every call
    writes afresh (an array, the tensor over it and its address), and the kernel's runner by
    address (PreparedConv.address_runner), bound to that buffer, where it has one."""
    kernel: kernels.PreparedConv
    out: np.ndarray
    tensor: torch.Tensor
    address: int
    by_address: Callable | None

    @classmethod
    def of(cls, kernel: kernels.PreparedConv, out: np.ndarray) -> "Run":
        return cls(kernel, out, torch.from_numpy(out), out.ctypes.data,
                   kernel.address_runner(out))


class FusedConv(nn.Module):
    """One convolution of the model, BatchNorm folded in and ReLU fused, run one of several
    ways (``runner``): "sparse" (the pointwise kernel for 1x1 layers without padding, the
    direct kernel for the others), "torch" (PyTorch's convolution on the folded weights), or a
    dense library's prepared convolution ("onnxruntime", "onednn")."""

    def __init__(self, conv: ModelConv, *, threads: int, built, plan=None, search: bool = False):
        super().__init__()
        self.conv, self.threads, self.built, self.plan = conv, threads, built, plan
        self.search = search  # search the direct kernel's plan when the database has none
        self.register_buffer("weight", torch.from_numpy(conv.weight.copy()))
        self.register_buffer("bias", None if conv.bias is None else torch.from_numpy(conv.bias.copy()))
        self.runner = SPARSE
        self.residual = False  # forward takes a second tensor, added before the activation
        self.times = LayerTimes()
        self.profiling = False
        # Per (runner, input shape): a Run, whose one output buffer every call writes
        # afresh; a fresh array per call would cost page faults on every large output.
        # Within one pass of the network each fused layer runs once, so its output is
        # consumed before it is overwritten; SparseNetwork copies a network output that is
        # such a buffer.
        self._runs: dict[tuple, Run] = {}

    @property
    def sparse(self) -> bool:
        return self.runner == SPARSE

    def kernel(self, shape: tuple) -> kernels.PreparedConv:
        """The prepared kernel of the current runner for inputs of ``shape``, prepared on
        first use."""
        return self._run_for(tuple(shape)).kernel

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or not x.is_contiguous() or x.requires_grad:
            x = x.detach().to(torch.float32).contiguous()
        return x

    def _run_for(self, shape: tuple) -> tuple:
        run = self._runs.get((self.runner, shape))
        if run is None:
            c = self.conv
            args = dict(input_shape=shape, stride=c.stride, padding=c.padding,
                        dilation=c.dilation, groups=c.groups, relu=c.relu, relu_max=c.relu_max,
                        threads=self.threads, kernels=self.built)
            spec = kernels.ConvSpec.from_shapes(shape, c.weight.shape, c.stride, c.padding,
                                                c.dilation, c.groups)
            sparse_method = kernels.sparse_method_for(spec)
            if not self.sparse:
                # dense libraries' threads must not spin between calls: many layers take turns
                k = kernels.prepare(c.weight, c.bias, method=self.runner, spin=False, **args)
            elif sparse_method != kernels.modelled_method():
                k = kernels.prepare(c.weight, c.bias, method=sparse_method, **args)
            else:  # the direct kernel, with its plan
                plan = self.plan or (self._searched_plan(spec) if self.search else None)
                k = kernels.prepare(c.weight, c.bias, plan=plan, **args)
            run = self._runs[(self.runner, shape)] = Run.of(
                k, activation_buffer(k.spec.output_shape))
        return run

    def prepared_kernels(self) -> list[kernels.PreparedConv]:
        """The kernels the current runner has prepared, one per input shape it has run."""
        return [run.kernel for (runner, _), run in self._runs.items() if runner == self.runner]

    def _searched_plan(self, spec):
        host = detect_host()
        return tuned_plan(self.conv.weight, spec, self.threads, self.built, host=host.cpu_model,
                          search=True, l2_bytes=host.caches_kib.get("l2", 256) * 1024)

    def fuse_residual(self, relu: bool, relu_max: float | None = None) -> None:
        """From now on forward(x, residual) computes act(conv(x) + residual), act the ReLU if
        ``relu`` (the layer's own ReLU is then none: it had no user but the addition)."""
        self.conv = dataclasses.replace(self.conv, relu=relu, relu_max=relu_max)
        self.residual = True
        self._runs.clear()  # the kernels apply the activation: prepare them afresh

    def dense(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        c = self.conv
        y = nn.functional.conv2d(x, self.weight, self.bias, c.stride, c.padding, c.dilation,
                                 c.groups)
        if residual is not None:
            y += residual
        if c.relu and c.relu_max is not None:
            return torch.clamp_(y, 0.0, c.relu_max)
        return torch.relu_(y) if c.relu else y

    def run_kernel(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        x = self._input(x)
        run = self._runs.get((self.runner, x.shape)) or self._run_for(tuple(x.shape))
        t0 = time.perf_counter() if self.profiling else 0.0
        if residual is not None:  # only kernels that fuse a residual get one (fuses_residuals)
            residual = residual.detach().to(torch.float32).contiguous()
        if run.by_address is None:
            if residual is None:
                run.kernel.run_into(x.numpy(), run.out)
            else:
                run.kernel.run_with_residual(x.numpy(), residual.numpy(), run.out)
        elif residual is None:
            run.by_address(x.data_ptr())
        else:
            run.by_address(x.data_ptr(), residual.data_ptr())
        if self.profiling:
            self.times.kernel_s += time.perf_counter() - t0
        return run.tensor

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if not self.profiling:
            return self.dense(x, residual) if self.runner == TORCH else self.run_kernel(x, residual)
        t0 = time.perf_counter()
        if self.runner == TORCH:
            y = self.dense(x, residual)
            self.times.kernel_s += time.perf_counter() - t0
        else:
            y = self.run_kernel(x, residual)
        self.times.calls += 1
        self.times.total_s += time.perf_counter() - t0
        return y

    def fuses_residuals(self) -> bool:
        """Whether it can add a residual before the activation: it has no ReLU of its own and
        runs in PyTorch or with a kernel that adds one (the pointwise kernel)."""
        if self.conv.relu or self.residual:
            return False
        return self.runner == TORCH or hasattr(self.kernel(self.conv.input_shape),
                                               "run_with_residual")

    def uses_buffers(self) -> bool:
        return self.runner != TORCH

    def bind_output(self, out_shape: tuple, buffer: np.ndarray) -> None:
        """Write the outputs of the model's own input shape into ``buffer``, which other
        layers share (harness.networks.memory plans when it is free)."""
        shape = self.conv.input_shape
        run = self._run_for(shape)
        if run.out.shape != tuple(out_shape):
            raise HarnessError(f"{self.conv.name}: planned an output of {out_shape}, the "
                               f"kernel writes {run.out.shape}")
        self._runs[(self.runner, shape)] = Run.of(run.kernel, buffer)

    def holds_buffer(self, address: int) -> bool:
        """Whether one of the output buffers this layer's calls write again starts at
        ``address``."""
        return any(run.address == address for run in self._runs.values())

    def decide(self, shape: tuple, choice: str) -> None:
        """How this layer runs: as asked ("sparse", or "dense": PyTorch), or (auto) the fastest
        of the sparse kernels, PyTorch and the dense libraries installed, timed side by side
        now on an input of ``shape``."""
        if choice != "auto":
            self.runner = SPARSE if choice == "sparse" else TORCH
            return
        x = torch.randn(shape)
        runners = [SPARSE, TORCH, *(m for m in DENSE_LIBRARIES
                                    if kernels.method_class(m).available())]

        def time_one(runner):
            self.runner = runner
            run = self.dense if runner == TORCH else self.run_kernel
            return measure(lambda: run(x), repeats=3, min_time=DECIDE_MIN_TIME_S).median

        with torch.no_grad():
            self.times.decided = interleaved_medians(runners, time_one)
        self.runner = min(self.times.decided, key=self.times.decided.get)
        # the close runners' kernels stay prepared until the choice in the network
        self.drop_other_runners(keep=self.close_runners())

    def drop_other_runners(self, keep=()) -> None:
        """Free the kernels prepared for runners other than the current one (and ``keep``)."""
        self._runs = {key: run for key, run in self._runs.items()
                      if key[0] == self.runner or key[0] in keep}

    def close_runners(self) -> list[str]:
        """The runners that timed alone within IN_NETWORK_WITHIN of the fastest, to be timed
        again inside the network; none for a layer that was not timed or that adds a residual
        (only some runners can). PyTorch is one of them only where it was the fastest alone:
        it allocates its outputs, and where that cost lands is not always the layer's own time
        (MobileNetV2, with PyTorch chosen inside the network, ran 20% slower), but where it won
        alone it can lose inside (ResNet-50's stem on two threads: PyTorch 1.23 ms alone and
        1.70 ms in the network, the direct kernel 1.24 ms alone)."""
        if not self.times.decided or self.residual:
            return []
        fastest = min(self.times.decided, key=self.times.decided.get)
        best = self.times.decided[fastest]
        return [r for r, t in self.times.decided.items()
                if t <= IN_NETWORK_WITHIN * best and (r != TORCH or fastest == TORCH)]

    def extra_repr(self) -> str:
        c = self.conv
        return (f"{c.name}: {c.input_shape[1]}->{c.weight.shape[0]} k{tuple(c.weight.shape[2:])} "
                f"s{c.stride} g{c.groups} relu={c.relu}"
                + (f" (max {c.relu_max:g})" if c.relu_max is not None else "")
                + f" runs {self.runner}, density "
                f"{np.count_nonzero(c.weight) / c.weight.size:.3f}")


class SparseNetwork(nn.Module):
    """The rewritten model. Calls run with ``threads`` threads (PyTorch's and the kernels')."""

    def __init__(self, graph: fx.GraphModule, layers: dict[str, FusedConv], threads: int,
                 notes: list[str]):
        super().__init__()
        self.graph_module, self.threads, self.notes = graph, threads, notes
        self.fused = layers
        self._pools = [m for m in graph.modules() if isinstance(m, POOLS)]

    def forward(self, *args):
        with torch_threads(self.threads), torch.no_grad():
            return self._detached(self.graph_module(*args))

    def _detached(self, result):
        """``result`` with every tensor that is a fused layer's or a pool's reused buffer
        copied, so that the next call cannot overwrite what the caller holds."""
        if isinstance(result, torch.Tensor):
            address = result.untyped_storage().data_ptr()
            reused = any(owner.holds_buffer(address)
                         for owner in (*self.fused.values(), *self._pools))
            return result.clone() if reused else result
        if isinstance(result, (tuple, list)):
            return type(result)(self._detached(r) for r in result)
        if isinstance(result, dict):
            return {k: self._detached(v) for k, v in result.items()}
        return result

    def train(self, mode: bool = True):
        """Inference only: the folded BatchNorms cannot train, so the network stays in eval
        mode (callers that switch modes around evaluation get the same function)."""
        return super().train(False)

    def layers(self) -> list[FusedConv]:
        return list(self.fused.values())

    def set_profiling(self, on: bool) -> None:
        for layer in self.layers():
            layer.profiling = on
            if on:
                layer.times.calls, layer.times.total_s, layer.times.kernel_s = 0, 0.0, 0.0

    def profiled_calls(self, example: torch.Tensor, calls: int) -> list[float]:
        """Wall seconds of ``calls`` calls after one warm-up, each fused layer's own time
        gathered in its ``times`` meanwhile (total_s and kernel_s over the calls)."""
        self(example)
        self.set_profiling(True)
        totals = []
        try:
            for _ in range(calls):
                t0 = time.perf_counter()
                self(example)
                totals.append(time.perf_counter() - t0)
        finally:
            self.set_profiling(False)
        return totals


def _check_choice(choice: str) -> str:
    if choice not in CHOICES:
        raise HarnessError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
    return choice


def sparsify(model: nn.Module, example_input: torch.Tensor, *, threads: int = 1,
             choice: str = "auto", kernels_build=None, check: bool = True,
             tune: str = "cached", plans: dict | None = None) -> SparseNetwork:
    """A module computing ``model``'s function (in eval mode) with fused sparse convolutions.

    ``choice``: "auto" times each way of running each convolution (sparse, PyTorch, the dense
    libraries) on ``example_input``'s shapes and keeps the fastest, then chooses again inside
    the network among the ways that came close (choose_in_network); the direct kernel takes
    the tuning database's plan for the layer when it has one. "sparse" or "dense" forces
    one. ``check`` compares every fused convolution's
    output on the example with the float64 reference (tolerance scaled to its accumulation
    length) and raises if one differs. ``tune``: "cached" takes the tuning database's plans,
    "search" searches (and stores) a plan for each direct-kernel layer that has none.
    ``plans`` maps a conv's name to a DirectPlan, overriding both."""
    _check_choice(choice)
    if tune not in TUNE_MODES:
        raise HarnessError(f"tune must be one of {', '.join(TUNE_MODES)}, got {tune!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise HarnessError(f"threads must be a positive integer, got {threads!r}")
    if not isinstance(example_input, torch.Tensor) or example_input.dtype != torch.float32:
        raise HarnessError("example_input must be a float32 torch.Tensor")
    model = model.eval()
    graph = trace(model, example_input)
    chains, notes = conv_chains(graph)
    built = native.resolve(kernels_build)
    fused: dict[str, FusedConv] = {}
    with torch_threads(threads):
        convs = [model_conv(graph, c) for c in chains]  # read before the graph changes
        for i, (chain, conv) in enumerate(zip(chains, convs)):
            layer = FusedConv(conv, threads=threads, built=built,
                              plan=(plans or {}).get(conv.name), search=tune == "search")
            shape = conv.input_shape
            layer.decide(shape, choice)
            if check:
                _check_layer(layer, shape)
            name = f"fused_{i}"
            graph.add_submodule(name, layer)
            # a module called twice (shared weights) is two fused layers
            fused[conv.name if conv.name not in fused else f"{conv.name}#{i}"] = layer
            with graph.graph.inserting_after(chain.last):
                node = graph.graph.call_module(name, (chain.conv.args[0],))
            node.meta = dict(chain.last.meta)
            chain.last.replace_all_uses_with(node)
            for dead in (chain.relu, chain.batchnorm, chain.conv):
                if dead is not None:
                    graph.graph.erase_node(dead)
    fuse_residual_adds(graph)
    replace_pools(graph, threads, built)
    by_target = {node.target: graph.get_submodule(node.target) for node in graph.graph.nodes
                 if node.op == "call_module" and node.target.startswith("fused_")}

    def bind_buffers():
        share_buffers(graph, {t: m for t, m in by_target.items() if m.uses_buffers()},
                      (FusedConv, *POOLS))
    bind_buffers()
    graph.graph.lint()
    graph.recompile()
    network = SparseNetwork(graph, fused, threads, notes)
    if choice == "auto":
        choose_in_network(network, example_input, bind_buffers, check)
    return network


def choose_in_network(network: SparseNetwork, example: torch.Tensor, bind_buffers,
                      check: bool) -> None:
    """Choose again, by its time inside the network, how each layer runs whose runners were
    close when timed alone (FusedConv.close_runners): every such layer runs each candidate in
    turn, all of them in one pass of IN_NETWORK_CALLS profiled calls per runner, and takes
    its fastest. The whole network with these choices is then timed against the first ones,
    interleaved, and the faster set kept. ``bind_buffers`` plans the shared output buffers
    for the current runners."""
    options = {layer: runners for layer in network.layers()
               if len(runners := layer.close_runners()) > 1}
    for layer in network.layers():
        if layer not in options:
            layer.drop_other_runners()
    if not options:
        return
    first = {layer: layer.runner for layer in options}
    for runner in sorted({r for runners in options.values() for r in runners}):
        for layer, runners in options.items():
            layer.runner = runner if runner in runners else first[layer]
        bind_buffers()
        network.profiled_calls(example, IN_NETWORK_CALLS)
        for layer, runners in options.items():
            if runner in runners:
                layer.times.in_network[runner] = layer.times.total_s / IN_NETWORK_CALLS
    chosen = {layer: min(layer.times.in_network, key=layer.times.in_network.get)
              for layer in options}

    def time_set(runners):
        for layer in options:
            layer.runner = runners[layer]
        bind_buffers()
        return measure(lambda: network(example), repeats=3, min_time=0.0).median
    if chosen != first:
        sets = {"first": first, "chosen": chosen}
        totals = interleaved_medians(list(sets), lambda name: time_set(sets[name]))
        chosen = sets[min(totals, key=totals.get)]
    for layer in options:
        layer.runner = chosen[layer]
        layer.drop_other_runners()
        if check and layer.runner != first[layer]:
            _check_layer(layer, layer.conv.input_shape)
    bind_buffers()


def fuse_residual_adds(graph: fx.GraphModule) -> None:
    """Fold each shortcut addition (and the ReLU after it) into the pointwise layer whose
    output it adds to: ResNet's last 1x1 convolution of a block, MobileNetV2's projection.
    The fused call takes the addition's place in the graph, after both of its inputs."""
    while True:  # one at a time: a rewrite replaces nodes that later matches refer to
        candidates = {node.target for node in graph.graph.nodes
                      if node.op == "call_module" and str(node.target).startswith("fused_")
                      and graph.get_submodule(node.target).fuses_residuals()}
        matches = residual_adds(graph, candidates)
        if not matches:
            return
        match = matches[0]
        layer = graph.get_submodule(match.fused.target)
        layer.fuse_residual(relu=match.relu is not None,
                            relu_max=fused_relu_max(graph, match.relu))
        with graph.graph.inserting_before(match.add):
            node = graph.graph.call_module(match.fused.target, (match.fused.args[0], match.residual))
        node.meta = dict(match.last.meta)
        match.last.replace_all_uses_with(node)
        for dead in (match.relu, match.add, match.fused):
            if dead is not None:
                graph.graph.erase_node(dead)


def _check_layer(layer: FusedConv, shape: tuple) -> None:
    """The fused layer's output, the way it will run, against the float64 reference."""
    c = layer.conv
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        out = layer(torch.from_numpy(x)).numpy().copy()
    verdict = verify(out, expected_output(x, c.weight, c.bias, c.spec(shape[0]), c.relu,
                                              c.relu_max))
    if not verdict.ok:
        raise HarnessError(f"{c.name}: the fused convolution run by {layer.runner} differs "
                           f"from the reference (max error {verdict.max_error:.3g}, "
                           f"{verdict.error_ratio:.1f}x the tolerance)")
