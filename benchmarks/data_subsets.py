"""Data files of other sizes from existing runs, for curves of test acceptance against data size.

    python benchmarks/data_subsets.py --data data/aa_300_450_small.npz --sizes 1250 2500 \
        [--join data/aa_seed2026.npz] --out-dir science_table_work/data

`--sizes N ...`: the first N samples per temperature of `--data`, which is exactly what the same
MD with `data.n_samples = N` would have saved (same seed, same equilibration, a shorter run).
`--join FILE ...`: `--data` followed by independent runs of the same system and ladder (other
seeds) along the sample axis. The trainer reads a joined file as one trajectory per temperature:
its validation blocks (`data.validation_blocks`, spread over the whole file) fall in every run
when there are at least as many blocks as runs, and its independent-sample count treats the joins
as ordinary steps of one run.
Files are written beside each other as `<stem>.n<N>.npz` and `<stem>.joined<N>.npz`; an existing
file is never replaced.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import numpy as np

PER_SAMPLE = ("positions", "potential_energy")  # arrays with the sample axis second


def _read(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _meta(arrays: dict[str, np.ndarray]) -> dict:
    return dict(ast.literal_eval(str(arrays["meta"])))


def prefix(arrays: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first `n` samples per temperature; the swap statistics stay those of the whole run."""
    have = arrays["positions"].shape[1]
    if not 0 < n <= have:
        raise SystemExit(f"--sizes {n}: the file holds {have} samples per temperature")
    out = {k: (v[:, :n] if k in PER_SAMPLE else v) for k, v in arrays.items()}
    meta = dict(_meta(arrays), subset=f"first {n} of {have} samples per temperature")
    out["meta"] = np.array(repr(meta))
    return out


def join(runs: list[dict[str, np.ndarray]], names: list[str]) -> dict[str, np.ndarray]:
    """Independent runs one after another along the sample axis; they must share system and ladder."""
    first = runs[0]
    for arrays, name in zip(runs[1:], names[1:]):
        for key in ("temperatures", "atom_names"):
            if not np.array_equal(arrays[key], first[key]):
                raise SystemExit(f"{name}: {key} differ from {names[0]}; only runs of one system and ladder join")
    out = dict(first)
    for key in PER_SAMPLE:
        out[key] = np.concatenate([r[key] for r in runs], axis=1)
    attempts = sum(r["swap_attempts"].astype(np.int64) for r in runs)
    accepted = sum(r["swap_acceptance"] * r["swap_attempts"] for r in runs)
    out["swap_attempts"] = attempts
    out["swap_acceptance"] = accepted / np.maximum(attempts, 1)
    seeds = [_meta(r).get("seed") for r in runs]
    meta = dict(_meta(first), seed=seeds[0], joined_seeds=seeds, joined_from=[Path(n).name for n in names])
    out["meta"] = np.array(repr(meta))
    return out


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    if path.exists():
        print(f"{path}: exists; kept", file=sys.stderr)
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    tmp.replace(path)
    print(f"{path}: {arrays['positions'].shape[1]} samples per temperature", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--sizes", type=int, nargs="*", default=[])
    ap.add_argument("--join", type=Path, nargs="*", default=[])
    ap.add_argument("--out-dir", type=Path, default=None, help="default: beside --data")
    args = ap.parse_args(argv)
    base = _read(args.data)
    out_dir = args.out_dir or args.data.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.data.name.removesuffix(".npz")
    for n in args.sizes:
        _write(out_dir / f"{stem}.n{n}.npz", prefix(base, n))
    if args.join:
        names = [str(args.data)] + [str(p) for p in args.join]
        joined = join([base] + [_read(p) for p in args.join], names)
        _write(out_dir / f"{stem}.joined{joined['positions'].shape[1]}.npz", joined)


if __name__ == "__main__":
    main()
