"""``sparq recall``: expected recall of bucketed top-k, every model side by side with simulation.

Examples
--------
``sparq recall --n 65536 --k 1024 --buckets 1024 --target 0.95``
``sparq recall --n 1500 --k 96 --buckets 192 --k-per-bucket 1 --plot recall.png``
``sparq recall --table`` prints the models-vs-simulation tables of ``docs/recall.md``.
"""

from __future__ import annotations

import argparse
import decimal
import json

import numpy as np

from costmodel import recall as rc


def _integer(text: str) -> int:
    """An integer written plainly or in exact scientific notation ("65536", "1e12")."""
    try:
        d = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not d.is_finite() or d != d.to_integral_value() or d.adjusted() > 40:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(d)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=_integer, help="number of elements (row length)")
    parser.add_argument("--k", type=_integer, help="target k")
    parser.add_argument("--buckets", type=_integer, help="number of buckets b")
    parser.add_argument("--k-per-bucket", type=_integer, default=1, help="k_b (default 1)")
    parser.add_argument("--target", type=float, help="recall target: buckets needed per model")
    parser.add_argument(
        "--trials", type=_integer, default=1000, help="simulation trials (0: no simulation)"
    )
    parser.add_argument("--seed", type=_integer, default=0, help="simulation seed (default 0)")
    parser.add_argument(
        "--correlation", type=float, help="AR(1) coefficient of the simulated data (default iid)"
    )
    parser.add_argument("--plot", metavar="FILE.png", help="plot recall vs buckets per model")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--table",
        action="store_true",
        help="print the models-vs-simulation tables of docs/recall.md (ignores --n/--k/...)",
    )


def _require(args: argparse.Namespace) -> None:
    missing = [f"--{a}" for a in ("n", "k", "buckets") if getattr(args, a) is None]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (or use --table)")


def _check_up_front(args: argparse.Namespace) -> None:
    """Refuse bad or over-limit arguments before any model or simulation runs."""
    n, k, b, kb = args.n, args.k, args.buckets, args.k_per_bucket
    rc.bucket_size_counts(n, b)  # n, num_buckets: ints in range
    rc._check_params(n, k, b, kb)
    if args.target is not None:
        rc._check_target(args.target)  # NaN, <= 0 and > 1 refused, as the API does
    c = args.correlation
    if c is not None and not -1.0 < c < 1.0:  # also NaN; checked even with --trials 0
        raise ValueError(f"correlation: expected -1 < correlation < 1, got {c}")
    if args.trials:  # simulation limits (n, trials, trials * n) before any model runs
        rc._check_simulation(
            n,
            k,
            num_buckets=b,
            k_per_bucket=kb,
            interleaved=True,
            trials=args.trials,
            seed=args.seed,
            correlation=c,
            row_topk=None,
        )


def compute(args: argparse.Namespace) -> dict:
    """All numbers for one configuration, as a JSON-able dict."""
    n, k, b, kb = args.n, args.k, args.buckets, args.k_per_bucket
    models = {}
    for model in rc.MODELS:
        entry = {
            "expected_recall": rc.expected_recall(n, k, num_buckets=b, k_per_bucket=kb, model=model)
        }
        if model != "poisson":
            try:
                d = rc.recall_distribution(
                    n, k, num_buckets=b, k_per_bucket=kb, model=model, full=False
                )
                entry["std"] = d.std
            except rc._LimitError:  # the variance's pair sum is over its work limit
                entry["std"] = None
        models[model] = entry
    if kb == 1:
        models["xla (1-1/M)^(K-1)"] = {"expected_recall": rc.expected_recall_xla(k, num_bins=b)}
        models["bound 1-(k-1)/(2b)"] = {
            "expected_recall": rc.recall_lower_bound_kb1(k, num_buckets=b)
        }
    out: dict = {"n": n, "k": k, "num_buckets": b, "k_per_bucket": kb, "models": models}
    if args.trials:
        sims = {}
        for interleaved in (True, False):
            r = rc.simulate_recall(
                n,
                k,
                num_buckets=b,
                k_per_bucket=kb,
                interleaved=interleaved,
                trials=args.trials,
                seed=args.seed,
                correlation=args.correlation,
            )
            sims["interleaved" if interleaved else "contiguous"] = {
                "mean": r.mean,
                "stderr": r.stderr,
                "std": float(r.recalls.std(ddof=1)),
            }
        out["simulation"] = {
            "trials": args.trials,
            "seed": args.seed,
            "correlation": args.correlation,
            **sims,
        }
    if args.target is not None:
        need = {}
        for model in rc.MODELS:
            try:
                need[model] = rc.buckets_for_recall(n, k, args.target, k_per_bucket=kb, model=model)
            except rc._UnreachableError:
                need[model] = None  # not reachable with b <= n
        if kb == 1 and args.target < 1:
            need["xla rule ceil((1-K)/ln r)"] = rc.bins_for_recall_xla(k, args.target)
            need["xla approx_max_k output size"] = rc.xla_reduction_output_size(n, k, args.target)
        out["target"] = args.target
        out["buckets_needed"] = need
    return out


def _print(res: dict) -> None:
    print(
        f"n = {res['n']}, k = {res['k']}, buckets = {res['num_buckets']}, "
        f"k_per_bucket = {res['k_per_bucket']}   (assumes distinct values, random order)"
    )
    print(f"{'model':<30} {'E[recall]':>10} {'std':>9}")
    for name, e in res["models"].items():
        std = " " * 9 if "std" not in e else "      n/a" if e["std"] is None else f"{e['std']:9.5f}"
        print(f"{name:<30} {e['expected_recall']:10.5f} {std}")
    if "simulation" in res:
        s = res["simulation"]
        data = "iid normal" if s["correlation"] is None else f"AR(1) rho={s['correlation']}"
        for lay in ("interleaved", "contiguous"):
            label = f"simulated, {lay}"
            print(
                f"{label:<30} {s[lay]['mean']:10.5f} {s[lay]['std']:9.5f}  "
                f"+- {s[lay]['stderr']:.5f} (se; {s['trials']} trials, {data}, "
                f"seed {s['seed']})"
            )
    if "buckets_needed" in res:
        print(f"\nbuckets needed for E[recall] >= {res['target']}:")
        for name, v in res["buckets_needed"].items():
            print(f"  {name:<30} {v if v is not None else '> n (unreachable)'}")


def _plot(args: argparse.Namespace, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, k, kb = args.n, args.k, args.k_per_bucket
    lo = -(-k // kb)
    # Python ints, clamped to [lo, n]: float(n) may round above int64 for n near 2**63.
    bs = np.array(sorted({min(n, max(lo, round(v))) for v in np.geomspace(lo, n, 80)}))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, style in zip(rc.MODELS, ("-", "-", "--"), strict=True):
        r = rc.expected_recall(n, k, num_buckets=bs, k_per_bucket=kb, model=model)
        ax.plot(bs, r, style, label=model)
    if kb == 1:
        ax.plot(
            bs,
            [rc.expected_recall_xla(k, num_bins=int(b)) for b in bs],
            ":",
            label="XLA (1-1/M)^(K-1)",
        )
    if args.trials:
        r = rc.simulate_recall(
            n,
            k,
            num_buckets=args.buckets,
            k_per_bucket=kb,
            trials=args.trials,
            seed=args.seed,
            correlation=args.correlation,
        )
        ax.errorbar(
            [args.buckets], [r.mean], yerr=[4 * r.stderr], fmt="ko", label="simulated (±4 se)"
        )
    ax.set_xscale("log")
    ax.set_xlabel("buckets b")
    ax.set_ylabel("expected recall")
    ax.set_title(f"bucketed top-k, n={n}, k={k}, k_b={kb}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- docs tables

#: (n, k, b, k_b) rows of the docs/recall.md table.
TABLE_CONFIGS: tuple[tuple[int, int, int, int], ...] = (
    (65536, 1024, 1024, 1),
    (65536, 1024, 2048, 1),
    (65536, 1024, 4096, 1),
    (65536, 1024, 8192, 1),
    (65536, 1024, 512, 2),
    (65536, 1024, 1024, 2),
    (65536, 1024, 256, 4),
    (65536, 1024, 512, 4),
    (65536, 1024, 1024, 4),
    (1500, 96, 96, 1),
    (1500, 96, 192, 1),
    (1500, 96, 384, 1),
    (1500, 96, 768, 1),
    (1500, 96, 48, 2),
    (1500, 96, 96, 2),
    (1500, 96, 192, 2),
    (64, 16, 8, 2),
    (32, 8, 8, 1),
    (50, 10, 50, 1),
)


def _trials_for(n: int) -> int:
    return 2000 if n >= 65536 else 20000


def print_tables(seed: int) -> None:
    print(
        "| n | k | b | k_b | exact | binomial (paper) | exact - binomial | poisson "
        "| simulated interleaved | simulated contiguous |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, k, b, kb in TABLE_CONFIGS:
        e = {
            m: rc.expected_recall(n, k, num_buckets=b, k_per_bucket=kb, model=m) for m in rc.MODELS
        }
        sims = [
            rc.simulate_recall(
                n,
                k,
                num_buckets=b,
                k_per_bucket=kb,
                interleaved=il,
                trials=_trials_for(n),
                seed=seed,
            )
            for il in (True, False)
        ]
        s = " | ".join(f"{r.mean:.4f} ± {r.stderr:.4f}" for r in sims)
        print(
            f"| {n} | {k} | {b} | {kb} | {e['exact']:.4f} | {e['binomial']:.4f} | "
            f"{e['exact'] - e['binomial']:+.4f} | {e['poisson']:.4f} | {s} |"
        )
    print(
        f"\n(simulation: {_trials_for(65536)} trials for n = 65536, "
        f"{_trials_for(1500)} otherwise; i.i.d. normal data; seed {seed}; ± one standard error)"
    )
    n, k, b = 65536, 1024, 1024
    print(
        f"\nAR(1) data, n = {n}, k = {k}, b = {b}, k_b = 1 (exact i.i.d. model "
        f"{rc.expected_recall(n, k, num_buckets=b):.4f}), 1000 trials, seed {seed}:\n"
    )
    print("| rho | interleaved | contiguous |")
    print("|---|---|---|")
    for rho in (None, 0.5, 0.9, 0.99, 0.999):
        sims = [
            rc.simulate_recall(
                n, k, num_buckets=b, interleaved=il, trials=1000, seed=seed, correlation=rho
            )
            for il in (True, False)
        ]
        label = "iid" if rho is None else f"{rho}"
        s = " | ".join(f"{r.mean:.4f} ± {r.stderr:.4f}" for r in sims)
        print(f"| {label} | {s} |")


def run(args: argparse.Namespace) -> int:
    if args.table:
        print_tables(args.seed)
        return 0
    _require(args)
    if args.trials != 0 and args.trials < 2:
        raise ValueError(f"--trials: expected 0 or >= 2, got {args.trials}")
    _check_up_front(args)
    res = compute(args)
    if args.json:
        print(json.dumps(res, indent=2, default=lambda v: None if v is None else float(v)))
    else:
        _print(res)
    if args.plot:
        _plot(args, args.plot)
        if not args.json:
            print(f"\nplot written to {args.plot}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    p = argparse.ArgumentParser(prog="sparq recall")
    add_arguments(p)
    sys.exit(run(p.parse_args()))
