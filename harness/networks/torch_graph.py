"""A PyTorch model's convolutions, read from its torch.fx graph: each Conv2d with the
BatchNorm2d and the ReLU (or ReLU6) that follow it alone (those fold and fuse into the
convolution)."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from harness.errors import HarnessError
from harness.kernels.base import RELU6
from harness.networks.layers import ModelConv, clamp_relu_cap, fold_batchnorm, relu_max_of

_RELU_FUNCTIONS = {torch.relu, torch.relu_, nn.functional.relu}
_RELU_METHODS = {"relu", "relu_"}
_HARDTANH_FUNCTIONS = {nn.functional.hardtanh, nn.functional.hardtanh_}


@dataclass
class ConvChain:
    """conv -> [batchnorm] -> [relu] in a traced graph; ``last`` is the node whose value the
    fused convolution computes."""
    conv: fx.Node
    batchnorm: fx.Node | None
    relu: fx.Node | None

    @property
    def last(self) -> fx.Node:
        return self.relu or self.batchnorm or self.conv


def trace(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """The model's fx graph with every node's output shape (``node.meta['tensor_meta']``)."""
    if not isinstance(model, nn.Module):
        raise HarnessError(f"expected a torch.nn.Module, got {type(model).__name__}")
    try:
        graph = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types on code it cannot trace
        raise HarnessError(f"torch.fx cannot trace {type(model).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
                           "(data-dependent control flow is not traceable)") from None
    with torch.no_grad():
        ShapeProp(graph).propagate(example)
    return graph


def _module(graph: fx.GraphModule, node: fx.Node, kind) -> nn.Module | None:
    if node.op != "call_module":
        return None
    module = graph.get_submodule(node.target)
    return module if isinstance(module, kind) else None


def relu_cap(graph: fx.GraphModule, node: fx.Node) -> float | None:
    """The cap of the ReLU that ``node`` applies to its one input: math.inf for a plain ReLU,
    6.0 for ReLU6 (a Hardtanh from 0 to a positive bound in general); None when it applies
    none."""
    if node.op == "call_function":
        if node.target in _RELU_FUNCTIONS:
            return math.inf
        if node.target is nn.functional.relu6:
            return RELU6
        if node.target in _HARDTANH_FUNCTIONS:
            bounds = [*node.args[1:3]]
            bounds += [node.kwargs.get(k, d) for k, d in
                       (("min_val", -1.0), ("max_val", 1.0))][len(bounds):]
            return clamp_relu_cap(*bounds)
        return None
    if node.op == "call_method":
        return math.inf if node.target in _RELU_METHODS else None
    if _module(graph, node, nn.ReLU) is not None:
        return math.inf
    hardtanh = _module(graph, node, nn.Hardtanh)  # nn.ReLU6 is one
    return None if hardtanh is None else clamp_relu_cap(hardtanh.min_val, hardtanh.max_val)


def fused_relu_max(graph: fx.GraphModule, relu: fx.Node | None) -> float | None:
    """The relu_max of a fused convolution whose ReLU is ``relu`` (None: none, or uncapped)."""
    return None if relu is None else relu_max_of(relu_cap(graph, relu))


def _sole_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


_ADD_FUNCTIONS = {operator.add, torch.add}


@dataclass
class ResidualAdd:
    """fused -> add(fused, residual) -> [relu]: the addition (and ReLU) a fused layer can
    apply to its own output."""
    fused: fx.Node
    residual: fx.Node
    add: fx.Node
    relu: fx.Node | None

    @property
    def last(self) -> fx.Node:
        return self.relu or self.add


def residual_adds(graph: fx.GraphModule, candidates: set[str]) -> list[ResidualAdd]:
    """Additions of a tensor of the same shape to the output of a candidate layer (a
    submodule name) that feeds nothing else, with the ReLU that alone follows them."""
    found = []
    for node in graph.graph.nodes:
        is_add = ((node.op == "call_function" and node.target in _ADD_FUNCTIONS)
                  or (node.op == "call_method" and node.target == "add"))
        if not is_add or len(node.args) != 2 or node.kwargs:
            continue
        for mine, other in (node.args, node.args[::-1]):
            if (isinstance(mine, fx.Node) and isinstance(other, fx.Node) and mine.op == "call_module"
                    and mine.target in candidates and len(mine.users) == 1
                    and _shape(mine) is not None and _shape(mine) == _shape(other)):
                user = _sole_user(node)
                found.append(ResidualAdd(mine, other, node, user if user is not None and
                                         relu_cap(graph, user) is not None else None))
                break
    return found


def _shape(node: fx.Node):
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def why_unsupported(conv: nn.Module) -> str | None:
    """Why a Conv2d cannot run as a fused sparse convolution, or None."""
    if conv.padding_mode != "zeros":
        return f"padding_mode {conv.padding_mode!r}"
    if isinstance(conv.padding, str) and conv.padding == "same" and any(
            d * (k - 1) % 2 for k, d in zip(conv.kernel_size, conv.dilation)):
        return "asymmetric 'same' padding"
    return None


def conv_chains(graph: fx.GraphModule) -> tuple[list[ConvChain], list[str]]:
    """Every Conv2d of the graph with what follows it, and a note for each one left out."""
    chains, notes = [], []
    for node in graph.graph.nodes:
        conv = _module(graph, node, nn.Conv2d)
        if conv is None:
            continue
        reason = why_unsupported(conv)
        if reason:
            notes.append(f"{node.target}: {reason} is not supported; it stays in PyTorch")
            continue
        bn = relu = None
        user = _sole_user(node)
        if user is not None and _module(graph, user, nn.BatchNorm2d) is not None \
                and graph.get_submodule(user.target).track_running_stats:
            bn, user = user, _sole_user(user)
        if user is not None and relu_cap(graph, user) is not None:
            relu = user
        chains.append(ConvChain(node, bn, relu))
    return chains, notes


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0)
        return tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))
    return tuple(conv.padding)


def model_conv(graph: fx.GraphModule, chain: ConvChain) -> ModelConv:
    """The chain as one convolution: the conv's geometry and input shape, its weights with the
    BatchNorm's inference statistics folded in."""
    conv = graph.get_submodule(chain.conv.target)
    shape = chain.conv.args[0].meta["tensor_meta"].shape
    weight = conv.weight.detach().float().numpy()
    bias = None if conv.bias is None else conv.bias.detach().float().numpy()
    bn_name = None
    if chain.batchnorm is not None:
        bn = graph.get_submodule(chain.batchnorm.target)
        scale = np.ones(bn.num_features) if bn.weight is None else bn.weight.detach().numpy()
        shift = np.zeros(bn.num_features) if bn.bias is None else bn.bias.detach().numpy()
        weight, bias = fold_batchnorm(weight, bias, scale, shift, bn.running_mean.numpy(),
                                      bn.running_var.numpy(), bn.eps)
        bn_name = chain.batchnorm.target
    return ModelConv(name=chain.conv.target, input_shape=tuple(int(d) for d in shape),
                     weight=np.ascontiguousarray(weight, dtype=np.float32),
                     bias=None if bias is None else np.ascontiguousarray(bias, np.float32),
                     stride=tuple(conv.stride), padding=_padding(conv),
                     dilation=tuple(conv.dilation), groups=conv.groups,
                     relu=chain.relu is not None, relu_max=fused_relu_max(graph, chain.relu),
                     batchnorm=bn_name)


def import_torch(model: nn.Module, example: torch.Tensor) -> tuple[list[ModelConv], list[str]]:
    """The convolutions of ``model`` as they run on ``example`` (in eval mode), in execution
    order, and a note for each one left out."""
    was_training = model.training
    model.eval()
    try:
        graph = trace(model, example)
        chains, notes = conv_chains(graph)
        return [model_conv(graph, c) for c in chains], notes
    finally:
        model.train(was_training)


__all__ = ["ConvChain", "trace", "conv_chains", "model_conv", "import_torch", "relu_cap",
           "fused_relu_max"]
