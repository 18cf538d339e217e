"""The layers the benchmarks time: generated weights, input and reference output, the same
for every benchmark so their numbers compare."""

from harness.conv.layers import network_layers
from harness.conv.verify import expected_output
from harness.conv.weights import generated_weights, sweep_input


def alexnet_problems(names: str, sparsity: float, batch: int):
    """(layer, spec, weights, input, expected output) for each AlexNet layer named in
    ``names`` (comma-separated), randomly pruned to ``sparsity``."""
    wanted = names.split(",")
    for layer in [l for l in network_layers("alexnet") if l.name in wanted]:
        spec = layer.spec(batch)
        w = generated_weights(layer, sparsity, "random", seed=0)
        x = sweep_input(layer, batch, seed=0)
        yield layer, spec, w, x, expected_output(x, w, None, spec, relu=False)
