"""Naive swap acceptance between two temperatures for a harmonic system of N degrees of freedom.

    python benchmarks/naive_harmonic.py [--cold 300] [--hot 450] [--dofs 20 40 60 63 80]

In a harmonic well the potential energy at temperature T is (k_B T / 2) times a chi-square
variable with N degrees of freedom, so the naive replica-exchange acceptance
min(1, exp[(beta_c - beta_h)(U_c - U_h)]) depends only on N and the temperature ratio. This is
the yardstick for how hard a transport problem is: a flexible molecule of n atoms has 3n - 6
degrees of freedom, and a naive acceptance measured on a molecule can be read as an effective N.
Monte Carlo over 10^6 pairs per N (fixed seed), with its standard error.
"""
from __future__ import annotations

import argparse

import numpy as np


def naive_acceptance(n_dof: int, t_cold: float, t_hot: float, pairs: int,
                     rng: np.random.Generator) -> tuple[float, float]:
    # in units of k_B: U_i / k_B = T_i * chi2_N / 2, and beta_i = 1 / T_i
    u_cold = t_cold * rng.chisquare(n_dof, pairs) / 2
    u_hot = t_hot * rng.chisquare(n_dof, pairs) / 2
    acc = np.minimum(1.0, np.exp((1 / t_cold - 1 / t_hot) * (u_cold - u_hot)))
    return float(acc.mean()), float(acc.std() / np.sqrt(pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=float, default=300.0)
    parser.add_argument("--hot", type=float, default=450.0)
    parser.add_argument("--dofs", type=int, nargs="+", default=[10, 20, 30, 40, 51, 60, 63, 80, 100])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"naive swap acceptance, harmonic, {args.cold:g} K <-> {args.hot:g} K")
    print("| degrees of freedom | acceptance |\n|---|---|")
    for n in args.dofs:
        mean, se = naive_acceptance(n, args.cold, args.hot, args.pairs, rng)
        print(f"| {n} | {mean:.3f} ± {se:.4f} |")


if __name__ == "__main__":
    main()
