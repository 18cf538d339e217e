"""Output buffers shared between fused layers whose outputs are never alive at once, planned
from the graph: a network's activations then cycle through a few buffers that stay in the
last-level cache, instead of one buffer per layer that evicts them (ResNet-50's 1x1 layers ran
2-3x slower inside the network than alone before). A layer takes the free buffer freed last
that holds its output, whatever its size: that one is likeliest still in the caches (and
ResNet-50 then needs 4 buffers, 10 MiB, where buffers of one size each needed 12, 12 MiB;
on two threads of an Intel Xeon it ran 0.99-1.13x as fast, median 1.08x over seven runs:
bench/buffer_plans.py)."""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
from torch import fx, nn

from harness.machine.build import aligned_zeros

# Buffers start on a whole vector (of the widest ISA), so no kernel's vector load of an
# activation straddles two cache lines where a plane is whole vectors.
VECTOR_BYTES = 64


def activation_buffer(shape: tuple) -> np.ndarray:
    """A float32 array of ``shape`` for a layer's outputs, aligned to VECTOR_BYTES."""
    return aligned_zeros(math.prod(shape), VECTOR_BYTES).reshape(shape)


# Operations whose result is a new tensor (never a view of, or written into, an input): a
# buffer read by one of them is dead once it has run. Anything else may alias its input, so
# the buffer stays alive as long as that operation's result does.
FRESH_FUNCTIONS = {operator.add, operator.mul, torch.add, torch.mul, torch.cat}
FRESH_MODULES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.Linear, nn.BatchNorm2d, nn.MaxPool2d)
NEVER = math.inf


def _fresh(graph: fx.GraphModule, node: fx.Node, fresh_modules: tuple) -> bool:
    if node.op == "call_function":
        return node.target in FRESH_FUNCTIONS and "out" not in node.kwargs
    if node.op == "call_module":
        return isinstance(graph.get_submodule(node.target), FRESH_MODULES + fresh_modules)
    return False


def last_read(graph: fx.GraphModule, node: fx.Node, order: dict, fresh_modules: tuple) -> float:
    """The position of the last node that may read ``node``'s value or an alias of it
    (NEVER when it may reach the graph's output)."""
    end, stack, seen = order[node], [node], {node}
    while stack:
        for user in stack.pop().users:
            if user.op == "output":
                return NEVER
            end = max(end, order[user])
            if user not in seen and not _fresh(graph, user, fresh_modules):
                seen.add(user)
                stack.append(user)
    return end


def share_buffers(graph: fx.GraphModule, layers: dict[str, nn.Module], fresh_modules: tuple,
                  *, any_size: bool = True) -> int:
    """Give the fused layers (by submodule name) output buffers that they share where their
    lifetimes do not overlap; returns how many buffers the network uses. A layer reads its
    input while it writes its output, so a buffer is reused only after its last read; of the
    free ones large enough, the one freed last (the smallest of those). ``any_size`` False:
    only a free buffer of the output's own size, the first freed (the planner before, kept to
    measure against: bench/buffer_plans.py)."""
    order = {node: i for i, node in enumerate(graph.graph.nodes)}
    free: list[tuple[float, np.ndarray]] = []  # (free after position, buffer)
    count = 0
    for node in graph.graph.nodes:
        if node.op != "call_module" or node.target not in layers:
            continue
        shape = tuple(node.meta["tensor_meta"].shape)
        floats = int(np.prod(shape))
        here = order[node]
        fits = [i for i, (end, buffer) in enumerate(free) if end < here and
                (buffer.size >= floats if any_size else buffer.size == floats)]
        if fits:
            pick = max(fits, key=lambda i: (free[i][0], -free[i][1].size)) if any_size else fits[0]
            buffer = free.pop(pick)[1]
        else:
            buffer = activation_buffer((floats,))
            count += 1
        layers[node.target].bind_output(shape, buffer[:floats].reshape(shape))
        end = last_read(graph, node, order, fresh_modules)
        if end != NEVER:
            free.append((end, buffer))
    return count
