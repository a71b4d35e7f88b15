"""Command line: ``blvnb data ...`` and ``blvnb reproduce``.

    blvnb data toycity --out DIR --style cityscapes --n-train N --n-val M --size HxW --seed S
    blvnb data toycity --out DIR --style voc|scannet --n-train N --n-val M --size HxW --seed S [--n-aug K]
    blvnb data check ROOT --dataset NAME        # every problem of a data root in one run (exit 1 if any)
    blvnb data prepare --profile quick          # the cached toycity trees a profile uses
    blvnb reproduce --profile quick [--only NB ...] [--jobs N|auto] [--force] [--data-root D] [--no-build]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from blvnb.errors import BlvnbError


def _data_toycity(a) -> None:
    from blvnb.data import toycity, toycity_layouts

    size = toycity.parse_size(a.size)
    if a.style in toycity_layouts.LAYOUT_STYLES:
        options = {"n_aug": a.n_aug} if a.style == "voc" and a.n_aug is not None else {}
        out = toycity_layouts.write_tree(a.out, a.style, n_train=a.n_train, n_val=a.n_val, size=size, seed=a.seed,
                                         progress=not a.quiet, **options)
    else:
        out = toycity.write_tree(a.out, a.style, n_train=a.n_train, n_val=a.n_val, size=size, seed=a.seed,
                                 progress=not a.quiet)
    print(f"wrote toycity ({a.style}) to {out}")


def _data_check(a) -> int:
    from blvnb.data.check import check_tree

    report = check_tree(a.root, a.dataset, splits=a.split or None, progress=not a.quiet)
    print(report.summary())
    return 0 if report.ok else 1


def _data_prepare(a) -> None:
    from blvnb.data import toycity
    from blvnb.experiments.profiles import get_profile

    p = get_profile(a.profile)
    if not p.synthetic:
        print(f"profile {p.name} uses the real data sets; nothing to generate")
        return
    for style in toycity.STYLES:
        path = toycity.ensure(style, n_train=p.n_train, n_val=p.n_val, size=p.size, seed=p.data_seed,
                              progress=not a.quiet)
        print(f"toycity {style:10s} {path}")


def _reproduce(a) -> None:
    from blvnb import reproduce

    t0 = time.perf_counter()
    root = reproduce.repo_root()
    if a.data_root is None:
        _data_prepare(argparse.Namespace(profile=a.profile, quiet=False))
    reproduce.run_notebooks(profile=a.profile, data_root=a.data_root, only=a.only, jobs=a.jobs, force=a.force,
                            root=root)
    if a.no_build:
        return
    index = reproduce.build_book(root)
    print(f"\nThe book is at {index}  (open file://{index}); {time.perf_counter() - t0:.0f} s in all")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="blvnb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = ap.add_subparsers(dest="cmd", required=True)

    data = sub.add_parser("data", help="synthetic data sets").add_subparsers(dest="data_cmd", required=True)
    t = data.add_parser("toycity", help="write a toycity tree in a real data set's layout")
    t.add_argument("--out", required=True)
    t.add_argument("--style", default="cityscapes", choices=("cityscapes", "gta", "synthia", "voc", "scannet"))
    t.add_argument("--n-train", type=int, default=200)
    t.add_argument("--n-val", type=int, default=60)
    t.add_argument("--size", default="128x256", help="HxW, e.g. 128x256")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-aug", type=int, default=None, help="voc: extra unlabeled images of the augmented set (default 3 x n-train)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(fn=_data_toycity)
    from blvnb.data.check import CHECKS

    c = data.add_parser("check", help="validate a data root: every image, label and split list, all problems at once")
    c.add_argument("root")
    c.add_argument("--dataset", required=True, choices=tuple(CHECKS))
    c.add_argument("--split", nargs="*", help="only these splits (default: all of the data set's)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(fn=_data_check)
    p = data.add_parser("prepare", help="generate (once) the cached toycity trees a profile uses")
    p.add_argument("--profile", default="quick")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=_data_prepare)

    r = sub.add_parser("reproduce", help="run the notebooks with papermill and build the book")
    r.add_argument("--profile", default="quick")
    r.add_argument("--data-root", default=None, help="folder with the real data sets (paper profile)")
    r.add_argument("--only", nargs="*", help="notebook names (without .ipynb)")
    r.add_argument("--jobs", default="1", help="notebooks at once; 'auto' = one per GPU")
    r.add_argument("--force", action="store_true", help="re-run notebooks even when fresh")
    r.add_argument("--no-build", action="store_true", help="run the notebooks, do not build the book")
    r.set_defaults(fn=_reproduce)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        rc = a.fn(a)
    except BlvnbError as exc:
        print(f"blvnb: error: {exc}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
