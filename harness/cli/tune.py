"""spconv tune: search the direct kernel's plan for layers at given sparsities and thread
counts, and store the winners in the tuning database that sweeps read."""

from __future__ import annotations

from harness import config
from harness.cli import common
from harness.conv.weights import PATTERNS
from harness.errors import HarnessError


def build_parser(prog: str):
    p = common.parser(prog, "Search the direct kernel's plan (register tile, blocks, layout, "
                            "bands) for layers and store the fastest in the tuning database.")
    common.add_profile(p)
    common.add_layer_source(p)
    p.add_argument("--sparsity", default="0.9", help="sparsity list or start:stop:step")
    p.add_argument("--batch", default=config.BATCHES, help="batch sizes, e.g. 1,16")
    p.add_argument("--threads", default=config.THREADS, help="thread counts, e.g. 1,2")
    p.add_argument("--pattern", default=config.PATTERN, choices=PATTERNS,
                   help="how the generated weights are made sparse")
    p.add_argument("--seed", type=common.number("--seed", low=0, integer=True),
                   default=config.SEED, help="seed of the generated weights")
    p.add_argument("--budget", type=common.number("--budget", low=1, high=10000, integer=True),
                   default=config.TUNE_BUDGET, help="plans timed per search")
    return p


def main(argv: list[str] | None = None, prog: str = "spconv tune") -> int:
    return common.run(_tune, build_parser(prog).parse_args(argv))


def _tune(args) -> int:
    from harness.cli.sweep import parse_ints, parse_sparsities
    from harness.conv.layers import load_layer_file, network_layers
    from harness.conv.weights import generated_weights
    from harness.machine.build import build
    from harness.kernels.plans import TuningDB
    from harness.sweep.tuning import tune

    profile, target, host = common.load_target(args)
    layers = load_layer_file(args.layer_file) if args.layer_file else network_layers(args.network)
    if args.layers:
        wanted = {n.strip() for n in args.layers.split(",") if n.strip()}
        unknown = wanted - {l.name for l in layers}
        if unknown:
            raise HarnessError(f"--layers: no layer {sorted(unknown)[0]!r}")
        layers = [l for l in layers if l.name in wanted]
    sparsities = parse_sparsities(args.sparsity)
    threads = [min(t, host.logical_cpus) for t in parse_ints(args.threads, "--threads")]
    batches = parse_ints(args.batch, "--batch")
    db = TuningDB()
    db.check()
    built = build(target)
    l2 = host.caches_kib.get("l2", 256) * 1024
    for layer in layers:
        for s in sparsities:
            w = generated_weights(layer, s, args.pattern, args.seed)
            for b in batches:
                for t in threads:
                    plan, info = tune(w, layer.spec(b), t, built, host=host.cpu_model,
                                      l2_bytes=l2, budget=args.budget, db=db, seed=args.seed)
                    print(f"{layer.key} s={s:.2f} b={b} t={t}: {info['time_s'] * 1e3:.3f} ms, "
                          f"{info['default_time_s'] / info['time_s']:.2f}x the default plan"
                          + (f", {info['model_time_s'] / info['time_s']:.2f}x the model's"
                             if "model_time_s" in info else "") + f"; {plan}")
    print(f"tuning database: {db.path}")
    return 0
