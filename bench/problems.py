"""The layers the benchmarks time: generated weights, input and reference output, the same
for every benchmark so their numbers compare."""

import argparse
import sys

import numpy as np

from harness.conv.layers import network_layers
from harness.conv.sparsity import check_sparsity
from harness.conv.verify import expected_output, verify
from harness.conv.weights import check_pattern, generated_weights, sweep_input
from harness.errors import HarnessError
from harness.timing import interleaved_medians, measure


GSL_PREFIX = "gsl-"


def layers_of(network: str):
    """A catalog network's layers, or a GSL network's (gsl-reference, gsl-bottleneck: its
    convolutions on a 28x28 image; that needs PyTorch)."""
    if not network.startswith(GSL_PREFIX):
        return network_layers(network)
    import torch
    from harness.gsl.network import build_network, conv_shapes
    model = build_network(network[len(GSL_PREFIX):], classes=10, width=32, in_channels=1)
    return list(conv_shapes(model, torch.zeros(1, 1, 28, 28), network).values())


def layer_bench_args(doc: str, network: str, sparsity: float):
    """The options of a benchmark over one network's layers at one sparsity (--network,
    --sparsity, --threads, --batch, --rounds), checked: a bad value is a HarnessError."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--network", default=network)
    ap.add_argument("--sparsity", type=float, default=sparsity)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    check_sparsity(args.sparsity)
    if args.threads < 1 or args.batch < 1:
        raise HarnessError("--threads and --batch must be at least 1")
    return args


def run_bench(main) -> int:
    """Run a benchmark's main(); a user's mistake is one line and exit status 2."""
    try:
        return main()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def sparsity_list(text: str) -> list[float]:
    """A comma-separated --sparsity, each in [0, 1)."""
    try:
        sparsities = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise HarnessError(f"--sparsity: not a list of numbers: {text!r}") from None
    for s in sparsities:
        check_sparsity(s)
    return sparsities


def verified_medians(prepared: dict, x, expected, label: str, rounds: int) -> dict:
    """Each prepared kernel's median seconds on ``x``, in interleaved rounds, after its output
    (poisoned with NaN first) is checked against ``expected`` (one output for all, or a dict
    by name); a wrong one is refused."""
    runs = {}
    for name, k in prepared.items():
        out = np.full(k.spec.output_shape, np.nan, np.float32)
        k.run_into(x, out)
        verdict = verify(out, expected[name] if isinstance(expected, dict) else expected)
        if not verdict.ok:
            raise HarnessError(f"{label} ({name}): wrong output: {verdict}")
        runs[name] = (lambda k=k, out=out: k.run_into(x, out))
    return interleaved_medians(runs, lambda name: measure(runs[name], repeats=3).median, rounds)


def alexnet_problems(names: str, sparsity: float, batch: int, pattern: str = "random"):
    """(layer, spec, weights, input, expected output) for each AlexNet layer named in
    ``names`` (comma-separated), pruned to ``sparsity`` in ``pattern`` (random by default),
    made as they are iterated; an unknown layer or pattern or a sparsity outside [0, 1) is
    refused at the call."""
    layers = _alexnet_layers(names, sparsity, batch)
    check_pattern(pattern)
    return (_problem(layer, sparsity, batch, pattern) for layer in layers)


def _alexnet_layers(names: str, sparsity: float, batch: int):
    check_sparsity(sparsity)
    if batch < 1:
        raise HarnessError(f"--batch must be at least 1, got {batch}")
    layers = network_layers("alexnet")
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in {l.name for l in layers}]
    if unknown or not wanted:
        raise HarnessError(f"--layers: no AlexNet layer {(unknown or [names])[0]!r} (have: "
                           f"{', '.join(l.name for l in layers)})")
    return [l for l in layers if l.name in wanted]


def _problem(layer, sparsity: float, batch: int, pattern: str = "random"):
    spec = layer.spec(batch)
    w = generated_weights(layer, sparsity, pattern, seed=0)
    x = sweep_input(layer, batch, seed=0)
    return layer, spec, w, x, expected_output(x, w, None, spec, relu=False)
