"""Achieved power of a plan made from pilot runs (nondet.analysis.planning), by simulation.

    .venv/bin/python benchmarks/plan_power.py [--trials 2000] [--effect 1.25]

Runs are normal with SD 1; the effect (in SDs) needs ``replicas_needed(effect, 1)`` runs per arm
at 80 % power when the SD is known. Each trial draws pilot runs per arm, plans from their pooled
SD (``replicas_needed``, and ``replicas_high``: the upper end of the SD's 95 % chi-square
interval), and reads the power the planned number of runs truly has (noncentral t, exact). The
pilot SD is drawn from its exact distribution: sqrt(chi2(df) / df), df = 2 (pilots - 1).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats

from nondet.analysis.planning import power_two_sample, replicas_needed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--effect", type=float, default=1.25)
    p.add_argument("--pilots", default="2,3,5,8")
    args = p.parse_args(argv)
    rng = np.random.default_rng(30)
    known = replicas_needed(args.effect, 1.0)
    print(f"effect {args.effect} SD: {known} runs per arm with a known SD; {args.trials} trials per row")
    print("| pilot runs per arm | mean achieved power (plan) | share under 50 % | mean achieved (replicas_high) |")
    print("|---|---|---|---|")
    for r0 in map(int, args.pilots.split(",")):
        df = 2 * (r0 - 1)
        sds = np.sqrt(rng.chisquare(df, args.trials) / df)
        hi = sds * math.sqrt(df / stats.chi2.ppf(0.025, df))
        cache = {}

        def achieved(sd):
            n = replicas_needed(args.effect, float(sd))
            if n not in cache:
                cache[n] = power_two_sample(n, args.effect, 1.0, 0.05) if n > 0 else 1.0
            return cache[n]

        plain = np.array([achieved(s) for s in sds])
        high = np.array([achieved(s) for s in hi])
        se = 100 * plain.std(ddof=1) / math.sqrt(args.trials)
        print(
            f"| {r0} | {100 * plain.mean():.1f} ± {se:.1f} % | {100 * np.mean(plain < 0.5):.1f} % | "
            f"{100 * high.mean():.1f} % |"
        )


if __name__ == "__main__":
    main()
