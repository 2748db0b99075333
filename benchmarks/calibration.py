"""Size and coverage of every test of the verdict engine (nondet.analysis.inference) at 2, 3, 5 and 8 runs
per arm, by simulation; prints one markdown table (docs/comparisons.md holds its output).

    .venv/bin/python benchmarks/calibration.py [--trials 1000] [--examples 500] [--workers 2]

Each trial draws a fresh test set of n examples and R runs per arm. Example e has a margin
m_e = u_e -+ w_e (difficulty u_e shared by the arms, a per-example arm difference w_e that is
symmetric, so the arms are equally good on the data distribution); run r adds an offset s_r (a
run effect, shared by the arms when runs are paired by seed) and every (run, example) a N(0, 1)
flip noise; the run gets example e right when m_e + s_r + noise > 0, and its per-example
cross-entropy is softplus(-(m_e + s_r + noise)). Noise structures:

- flips: no run effect (s = 0), no arm difference per example: the run-to-run noise is only the
  independent per-example flips;
- runs: a run effect SD 0.15 (the run-to-run SD of accuracy ~2x that of the flips alone);
- mixed: run effect SD 0.05 and per-example arm differences w ~ N(0, 0.5): the arms differ on
  this test set, not on the distribution.

True values: "this test set" tests (welch, paired_runs, permutation, p_better, tost, fixes,
regressions) against the expectation over new runs on the trial's test set (Gauss-Hermite over
the run effect); joint_paired / joint_unpaired against the data-distribution difference, 0.
Rejection under no effect is counted where the true value is 0 (flips and runs; tost at its
margin, the boundary of its null); coverage everywhere (tost's interval is the 1 - 2 alpha = 90 %
one, by the TOST convention). A test withheld at some R (nondet.analysis.inference.WITHHELD_BELOW) is
still measured and marked "withheld". Monte-Carlo SE: sqrt(p (1 - p) / trials).
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import warnings
from multiprocessing import Pool

import numpy as np
from scipy import stats

from nondet.analysis.inference import WITHHELD_BELOW, compare, paired_runs, welch
from nondet.analysis.prob_better import p_better
from nondet.analysis.verdict import decide, verdict

STRUCTURES = {"flips": (0.0, 0.0), "runs": (0.15, 0.0), "mixed": (0.05, 0.5)}
NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(40)
WEIGHTS = WEIGHTS / WEIGHTS.sum()
DEFAULT_RUNS = (2, 3, 5, 8)
MARGIN = 1.0  # accuracy points, for tost at the boundary of its null


def _softplus_neg_mean(m, extra_sd):
    """E[softplus(-(m + Z))], Z ~ N(0, 1 + extra_sd^2), per entry of m (Gauss-Hermite)."""
    z = m[..., None] + math.sqrt(1 + extra_sd**2) * NODES
    return (np.logaddexp(0, -z) * WEIGHTS).sum(-1)


def truths(ma, mb, run_sd, shared):
    """Expectations over new runs on this test set (margins ma, mb per example)."""
    s = run_sd * NODES[:, None]  # run effect at the Gauss-Hermite nodes
    pa, pb = stats.norm.cdf(ma + s), stats.norm.cdf(mb + s)  # (nodes, n): P(correct | run effect)
    n = ma.size
    w = WEIGHTS[:, None]
    mean_a, mean_b = 100 * (w * pa).sum(0), 100 * (w * pb).sum(0)  # per example, over runs
    # variance of a run's accuracy: over the run effect + the flips given it
    acc_a, acc_b = 100 * pa.mean(1), 100 * pb.mean(1)
    flip_a = 1e4 * (pa * (1 - pa)).sum(1) / n**2
    flip_b = 1e4 * (pb * (1 - pb)).sum(1) / n**2
    diff = mean_a.mean() - mean_b.mean()
    if shared:
        d = acc_a - acc_b
        var_d = (WEIGHTS * (d - diff) ** 2).sum() + (WEIGHTS * (flip_a + flip_b)).sum()
        p_better = stats.norm.cdf(diff / math.sqrt(var_d)) if var_d > 0 else 0.5
        fixes = n * (WEIGHTS[:, None] * pa * (1 - pb)).sum(0).mean()
        regressions = n * (WEIGHTS[:, None] * (1 - pa) * pb).sum(0).mean()
    else:
        var_a = (WEIGHTS * (acc_a - mean_a.mean()) ** 2).sum() + (WEIGHTS * flip_a).sum()
        var_b = (WEIGHTS * (acc_b - mean_b.mean()) ** 2).sum() + (WEIGHTS * flip_b).sum()
        p_better = stats.norm.cdf(diff / math.sqrt(var_a + var_b))
        ea, eb = mean_a / 100, mean_b / 100
        fixes, regressions = (ea * (1 - eb)).sum(), ((1 - ea) * eb).sum()
    ce = _softplus_neg_mean(ma, run_sd).mean() - _softplus_neg_mean(mb, run_sd).mean()
    return {"accuracy": diff, "cross_entropy": ce, "p_better": p_better, "fixes": fixes, "regressions": regressions}


def trial(args):
    structure, runs, paired, n, seed = args
    warnings.simplefilter("ignore", RuntimeWarning)
    run_sd, tau = STRUCTURES[structure]
    rng = np.random.default_rng(seed)
    u, w = rng.normal(1.0, 1.5, n), rng.normal(0, tau, n) if tau else np.zeros(n)
    ma, mb = u - w, u + w
    sa = rng.normal(0, run_sd, (runs, 1))
    sb = sa if paired else rng.normal(0, run_sd, (runs, 1))
    za = ma + sa + rng.normal(0, 1, (runs, n))
    zb = mb + sb + rng.normal(0, 1, (runs, n))
    base = {"accuracy": 100.0 * (zb > 0), "cross_entropy": np.logaddexp(0, -zb)}
    cand = {"accuracy": 100.0 * (za > 0), "cross_entropy": np.logaddexp(0, -za)}
    truth = truths(ma, mb, run_sd, paired)
    pairs = [(i, i) for i in range(runs)] if paired else None
    rows = compare(base, cand, 0.05, pairs, margin={"accuracy": MARGIN}, correct=False, withhold=False)
    # tost at the boundary of its null: the candidate shifted by the margin from the truth
    shifted = {**cand, "accuracy": cand["accuracy"] + MARGIN - truth["accuracy"]}
    at_margin = compare(base, shifted, 0.05, pairs, margin={"accuracy": MARGIN}, correct=False, withhold=False)
    tost_row = next(r for r in at_margin if r["test"] == "tost")
    out = []
    for r in rows:
        if r["test"] == "tost":
            r = tost_row
        metric, test = r["metric"], r["test"]
        if test.startswith("joint"):
            true = 0.0
        elif test in ("p_better", "fixes", "regressions"):
            true = truth[test]
        elif test == "tost":
            true = MARGIN
        else:
            true = truth[metric]
        if test == "p_better":  # the direction of "better" for cross-entropy is lower
            true = true if metric == "accuracy" else None
        null = test.startswith("joint") or (tau == 0 and test in ("welch", "paired_runs", "permutation", "p_better"))
        null = null or test == "tost"
        covered = None
        if true is not None and np.isfinite(r["ci_low"]):
            covered = r["ci_low"] <= true <= r["ci_high"]
        rejected = r["p_value"] < 0.05 if null and np.isfinite(r["p_value"]) else None
        out.append((metric, test, covered, rejected, runs < WITHHELD_BELOW.get(test, 0)))
    # the decision (both tests must reject): how often it says "significant" where nothing differs
    for v in verdict(rows):
        rejected = v["decision"].startswith("significant") if tau == 0 else None
        out.append((v["metric"], "decision", None, rejected, False))
    return out


# --- run-level structures: misbehaving runs ---------------------------------------------------

#: Run-to-run noise of a run's score, standardised (SD 1 where it has one); scaled to points
#: (accuracy, SD 0.3) or nats (cross-entropy, SD 0.01, worse = higher). ``divergent``: 10 % of
#: runs diverge to -5 points (-16.7 SD); ``divergent_baseline``: only the baseline's do (the
#: issue's example: the candidate never diverges but is 1 SD worse; true P(A > B) = 0.316).
RUN_STRUCTURES = ("normal", "t3", "divergent", "skewed", "divergent_baseline")
RUN_SCALE = {"accuracy": (95.0, 0.3), "cross_entropy": (0.25, -0.01)}
DIVERGED = -5.0 / 0.3


def run_noise(rng, structure: str, size, arm: str = "baseline") -> np.ndarray:
    if structure == "t3":
        return rng.standard_t(3, size) / math.sqrt(3)
    if structure == "skewed":
        return 1.0 - rng.exponential(1.0, size)  # a long tail to the bad side
    x = rng.normal(0, 1, size)
    if structure == "divergent" or (structure == "divergent_baseline" and arm == "baseline"):
        x = np.where(rng.random(size) < 0.1, DIVERGED + rng.normal(0, 1, size), x)
    return x


@functools.lru_cache(maxsize=None)
def run_truths(structure: str, shift: float) -> tuple[float, float]:
    """(mean of candidate - baseline, P(candidate run beats baseline run)) in SD units, from 10^6
    draws of a fixed seed (Monte-Carlo error ~0.0005)."""
    rng = np.random.default_rng(99)
    a = run_noise(rng, structure, 1_000_000, "candidate") + shift
    b = run_noise(rng, structure, 1_000_000, "baseline")
    return float(a.mean() - b.mean()), float(np.mean(a > b))


def run_trial(args):
    structure, runs, paired, shift, metric, seed = args
    warnings.simplefilter("ignore", RuntimeWarning)
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 1, runs) if paired else 0.0  # a seed effect both arms share
    a = shared + run_noise(rng, structure, runs, "candidate") + shift
    b = shared + run_noise(rng, structure, runs, "baseline")
    level, sd = RUN_SCALE[metric]
    hib = sd > 0
    diff_test = paired_runs if paired else welch
    diff = diff_test(level + sd * a, level + sd * b)
    pb = p_better(level + sd * a, level + sd * b, hib, 0.05, paired)
    d = decide(diff, pb, 0.75, 0.05, hib)
    true_diff, true_p = run_truths(structure, shift)
    true_diff *= sd
    return (
        diff["ci_low"] <= true_diff <= diff["ci_high"],
        pb["ci_low"] <= true_p <= pb["ci_high"],
        diff["p_value"] < 0.05,
        pb["p_value"] < 0.05,
        d["decision"].startswith("significant"),
    )


def run_level(args) -> None:
    """The run-level table: size under no effect (shift 0) and coverage and power at a 1-SD shift
    (divergent_baseline: the candidate 1 SD worse), per structure, R, metric and pairing."""
    runs = [int(r) for r in args.runs.split(",")]
    cells = [
        (s, r, paired, shift, metric)
        for paired in (False, True)
        if ("yes" if paired else "no") in args.paired.split(",")
        for s in RUN_STRUCTURES
        for r in runs
        for metric in RUN_SCALE
        for shift in ((-1.0,) if s == "divergent_baseline" else (0.0, 1.0))
    ]
    for s in RUN_STRUCTURES:
        for shift in (-1.0, 0.0, 1.0):
            run_truths(s, shift)
    out = {}
    with Pool(args.workers) as pool:
        for k, cell in enumerate(cells):
            jobs = [(*cell, args.seed + 7_000_003 * k + t) for t in range(args.trials)]
            res = np.array(pool.map(run_trial, jobs, chunksize=50), dtype=float)
            out[cell] = res.mean(0)
            print(f"done {cell}", file=sys.stderr, flush=True)
    se = lambda q: 100 * math.sqrt(max(q * (1 - q), 1e-9) / args.trials)  # noqa: E731
    print(
        f"trials per cell: {args.trials}; Monte-Carlo SE of a 5 % rate {se(0.05):.1f}, of a 95 % coverage "
        f"{se(0.95):.1f} points"
    )
    print(
        "| runs paired | structure | R | metric | no effect: decision rejects | diff test rejects | P(A>B) rejects "
        "| 1 SD shift: diff coverage | P(A>B) coverage | decision rejects (power) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = []
    for paired in (False, True):
        for s in RUN_STRUCTURES:
            for r in runs:
                for metric in RUN_SCALE:
                    null = out.get((s, r, paired, 0.0, metric))
                    alt = out.get((s, r, paired, -1.0 if s == "divergent_baseline" else 1.0, metric))
                    if alt is None:
                        continue
                    f = lambda x: f"{100 * x:.1f}"  # noqa: E731
                    size = " | ".join(f(x) for x in null[[4, 2, 3]]) if null is not None else "– | – | –"
                    print(
                        f"| {'yes' if paired else 'no'} | {s} | {r} | {metric} | {size} | {f(alt[0])} | {f(alt[1])} "
                        f"| {f(alt[4])} |"
                    )
                    where = f"{s} R={r} {metric} paired={paired}"
                    if null is not None and null[4] > 0.065:
                        worst.append(f"decision size {100 * null[4]:.1f} %: {where}")
                    for name, cov in (("difference", alt[0]), ("P(A>B)", alt[1])):
                        if cov < 0.93:
                            worst.append(f"{name} coverage {100 * cov:.1f} %: {where}")
    print()
    print("Outside the limits (decision size > 6.5 %, coverage < 93 %):", "none" if not worst else "")
    for line in worst:
        print(f"- {line}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--examples", type=int, default=500)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--runs", default="2,3,5,8")
    p.add_argument("--structures", default=",".join(STRUCTURES))
    p.add_argument("--paired", default="no,yes", help="no, yes or no,yes")
    p.add_argument("--seed", type=int, default=0, help="offset of every trial's seed (a fresh draw)")
    p.add_argument(
        "--run-level",
        action="store_true",
        help="the run-level table instead: misbehaving runs (t3, divergent, skewed) at --runs (e.g. 2,3,5,8,16)",
    )
    args = p.parse_args(argv)
    if args.run_level:
        return run_level(args)
    cells = [
        (s, r, paired)
        for paired in (False, True)
        if ("yes" if paired else "no") in args.paired.split(",")
        for s in args.structures.split(",")
        for r in map(int, args.runs.split(","))
    ]
    results = {}
    with Pool(args.workers) as pool:
        for k, (s, r, paired) in enumerate(cells):
            # the cell's place in the default grid: the same seeds whichever cells are asked for
            r_index = DEFAULT_RUNS.index(r) if r in DEFAULT_RUNS else r
            cell = 12 * paired + 4 * list(STRUCTURES).index(s) + r_index
            jobs = [(s, r, paired, args.examples, args.seed + 1_000_003 * cell + t) for t in range(args.trials)]
            stats_ = {}
            for out in pool.map(trial, jobs, chunksize=25):
                for metric, test, covered, rejected, withheld in out:
                    d = stats_.setdefault((metric, test), {"cov": [], "rej": [], "withheld": 0})
                    if covered is not None:
                        d["cov"].append(covered)
                    if rejected is not None:
                        d["rej"].append(rejected)
                    d["withheld"] += withheld
            results[(s, r, paired)] = stats_
            print(f"done {s} R={r} paired={paired}", file=sys.stderr, flush=True)

    def fmt(xs):
        if not xs:
            return "–"
        q = float(np.mean(xs))
        return f"{100 * q:.1f} ± {100 * math.sqrt(max(q * (1 - q), 1e-9) / len(xs)):.1f}"

    print(f"trials per cell: {args.trials}; examples per test set: {args.examples}")
    print(
        "| runs paired | structure | R | metric | test | rejects at 5 % (no effect) | coverage (95 %; tost 90 %) "
        "| withheld |"
    )
    print("|---|---|---|---|---|---|---|---|")
    worst = []
    for (s, r, paired), st in results.items():
        for (metric, test), d in st.items():
            withheld = d["withheld"] == args.trials
            print(
                f"| {'yes' if paired else 'no'} | {s} | {r} | {metric} | {test} | {fmt(d['rej'])} | "
                f"{fmt(d['cov'])} | {'yes' if withheld else ''} |"
            )
            if not withheld:
                if d["rej"] and np.mean(d["rej"]) > 0.065:
                    worst.append(f"size {100 * np.mean(d['rej']):.1f} %: {test} {metric} {s} R={r} paired={paired}")
                if d["cov"] and np.mean(d["cov"]) < (0.88 if test == "tost" else 0.93):
                    worst.append(f"coverage {100 * np.mean(d['cov']):.1f} %: {test} {metric} {s} R={r} paired={paired}")
    print()
    print(
        "Outside the limits (size > 6.5 %, coverage < 93 %; tost: its 90 % interval, < 88 %):",
        "none" if not worst else "",
    )
    for line in worst:
        print(f"- {line}")


if __name__ == "__main__":
    main()
