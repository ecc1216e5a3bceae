"""The ``landscape`` command line.

Examples::

    landscape fetch-data                 # fetch and verify MNIST into ./data
    landscape train paper-adam           # train and cache all runs of an experiment
    landscape train paper-adam --trajectory-dir traj --snapshot-every 10
    landscape experiments                # list registered experiments
    landscape sweep robustness --scheduler tcp://127.0.0.1:8786   # train on a cluster, check
    landscape trajectory paper-adam --output pca.png      # run 0 on its PCA plane
    landscape surface paper-adam --plane random --surface-3d
    landscape retrain-from-plane paper-adam --alpha 20 --beta 0 --epochs 10

The plane commands read trained runs from the cache and never train them;
run ``landscape train EXPERIMENT`` first. They evaluate losses on the test set.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from landscape import experiment as registry
from landscape.cache import RunCache, RunNotCachedError, default_cache_dir
from landscape.data import DataError, default_data_root, load_dataset
from landscape.sweep import SweepError
from landscape.trajectory import Capture

logger = logging.getLogger("landscape.cli")

PLANE_COMMANDS = ("surface", "trajectory", "retrain-from-plane")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root", type=Path, default=None, metavar="DIR",
        help="directory holding the datasets (default: $LANDSCAPE_DATA_ROOT or ./data)",
    )
    parser.add_argument(
        "--experiments-file", type=Path, default=None, metavar="PATH",
        help="TOML file with extra [experiments.NAME] tables (default: none)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int {text!r}; expected a whole number such as 21") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; expected an int of at least 1")
    return value


def _add_plane_options(parser: argparse.ArgumentParser, *, output_required: bool) -> None:
    """Add the options shared by the plane commands (surface, trajectory, retrain-from-plane)."""
    parser.add_argument("experiment", help="registered experiment name, such as paper-adam")
    parser.add_argument(
        "--run", type=int, default=0, metavar="R",
        help="run index (0-based) whose cached trajectory defines the plane (default: 0)",
    )
    parser.add_argument(
        "--grid", type=_positive_int, default=21, metavar="N",
        help="grid points per axis (default: 21)",
    )
    parser.add_argument(
        "--range", type=float, nargs=2, default=None, metavar=("LO", "HI"), dest="value_range",
        help="coordinate range of both axes; 0 must fall on a grid point, for example a "
        "symmetric range with an odd --grid (default: the PCA plane covers the trajectory "
        "with a 20%% margin; a random plane spans -1 to 1)",
    )
    parser.add_argument(
        "--samples", type=_positive_int, default=None, metavar="N",
        help="evaluate losses on the first N test samples (default: the whole test set)",
    )
    parser.add_argument(
        "--output", type=Path, required=output_required,
        default=None, metavar="PATH.png",
        help="figure file; the format follows the suffix"
        + ("" if output_required else " (default: a name made from the experiment, run and plane)"),
    )
    parser.add_argument(
        "--save", type=Path, default=None, metavar="PATH.npz",
        help="also write the surface with landscape.surface.save_surface (default: not saved)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, metavar="DIR",
        help=f"trained-run cache (default: {default_cache_dir()})",
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=None, metavar="N",
        help="torch intra-op threads (default: torch's own choice). When other processes "
        "keep the cores busy, 1 can be several times faster",
    )
    _add_common(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landscape",
        description="Train, cache and inspect the runs behind the landscape claim checks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fetch = commands.add_parser("fetch-data", help="fetch and verify a dataset")
    fetch.add_argument("dataset", nargs="?", default="mnist", help="dataset name (default: mnist)")
    _add_common(fetch)

    train = commands.add_parser("train", help="train and cache all runs of experiments")
    train.add_argument(
        "experiments", nargs="?", default="paper",
        help="comma-separated experiment or group names (default: paper)",
    )
    train.add_argument(
        "--cache-dir", type=Path, default=None, metavar="DIR",
        help=f"trained-run cache (default: {default_cache_dir()})",
    )
    train.add_argument("--retrain", action="store_true", help="train again even when cached")
    train.add_argument(
        "--trajectory-dir", type=Path, default=None, metavar="DIR",
        help="also stream each run's snapshots to DIR/EXPERIMENT-runR-everyN.npy (float32, "
        "one row per snapshot; read it with landscape.trajectory.open_trajectory); runs "
        "without such a file are trained again (default: no files)",
    )
    train.add_argument(
        "--snapshot-every", type=_positive_int, default=None, metavar="N",
        help="with --trajectory-dir, take a snapshot every N optimizer steps "
        "(default: one per epoch)",
    )
    _add_common(train)

    sweep = commands.add_parser(
        "sweep",
        help="train the missing runs of experiments, here or on a Dask cluster, then "
        "check their claims",
    )
    sweep.add_argument(
        "experiments", help="comma-separated experiment or group names, such as robustness",
    )
    sweep.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help="dask.distributed scheduler address, such as tcp://127.0.0.1:8786; each run "
        "becomes one task and workers write to the same cache (default: train here)",
    )
    sweep.add_argument(
        "--threads-per-run", type=_positive_int, default=1, metavar="N",
        help="torch threads of each task on a Dask worker (default: 1)",
    )
    sweep.add_argument(
        "--cache-dir", type=Path, default=None, metavar="DIR",
        help=f"trained-run cache, reachable by every worker (default: {default_cache_dir()})",
    )
    sweep.add_argument(
        "--no-check", action="store_true",
        help="only train; by default the claims of the experiments are then checked with "
        "pytest claims/, which writes the report",
    )
    sweep.add_argument(
        "--report-dir", type=Path, default=None, metavar="DIR",
        help="where the check writes claims.json and index.html (default: ./reports)",
    )
    _add_common(sweep)

    listing = commands.add_parser("experiments", help="list registered experiments")
    _add_common(listing)

    surface = commands.add_parser(
        "surface", help="draw the loss surface of a plane through a cached run's final weights",
    )
    _add_plane_options(surface, output_required=False)
    surface.add_argument(
        "--plane", choices=("pca", "random"), default="pca",
        help="pca: the run's first two principal components, with its trajectory drawn; "
        "random: two filter-normalized Gaussian directions (default: pca)",
    )
    surface.add_argument(
        "--seed", type=int, default=0, metavar="S",
        help="seed of the random plane's directions (default: 0)",
    )
    surface.add_argument(
        "--surface-3d", action="store_true",
        help="also draw a 3-D surface, written beside --output as NAME-3d.SUFFIX",
    )

    trajectory = commands.add_parser(
        "trajectory", help="draw a cached run's trajectory on its PCA plane, with fidelity",
    )
    _add_plane_options(trajectory, output_required=True)
    trajectory.add_argument(
        "--fidelity-output", type=Path, default=None, metavar="PATH.png",
        help="also plot real against projected loss per snapshot (default: not drawn)",
    )

    retrain = commands.add_parser(
        "retrain-from-plane",
        help="train from a point of a cached run's PCA plane and draw both trajectories",
    )
    _add_plane_options(retrain, output_required=False)
    retrain.add_argument("--alpha", type=float, required=True, metavar="A",
                         help="start coordinate along PC1, in weight-space units")
    retrain.add_argument("--beta", type=float, required=True, metavar="B",
                         help="start coordinate along PC2, in weight-space units")
    retrain.add_argument(
        "--epochs", type=_positive_int, default=None, metavar="E",
        help="epochs to train from the point (default: the experiment's epochs)",
    )
    return parser


def _with_threads(threads: int | None, function, *args):
    """Call ``function(*args)`` with ``threads`` torch intra-op threads, then restore the count."""
    if threads is None:
        return function(*args)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return function(*args)
    finally:
        torch.set_num_threads(previous)


def _sweep(args: argparse.Namespace) -> int:
    """Run ``landscape sweep``: train, then check the claims with pytest unless --no-check."""
    from landscape.sweep import sweep

    names = registry.resolve(args.experiments)
    result = sweep(
        [registry.get(name) for name in names],
        cache_dir=args.cache_dir,
        data_root=args.data_root,
        scheduler=args.scheduler,
        threads_per_run=args.threads_per_run,
    )
    print(f"sweep: {result.total_runs} runs of {len(names)} experiments, trained "
          f"{len(result.trained)} in {result.seconds:.0f} s")
    if args.no_check:
        return 0
    claims_dir = Path(__file__).resolve().parents[1] / "claims"
    if not claims_dir.is_dir():
        raise ValueError(
            f"no claims folder at {claims_dir}: checking needs a checkout of the "
            "repository; pass --no-check to only train"
        )
    import pytest

    options = [str(claims_dir), "-p", "no:cacheprovider", f"--landscape-experiments={','.join(names)}"]
    for flag, value in (
        ("--landscape-cache-dir", args.cache_dir),
        ("--landscape-data-root", args.data_root),
        ("--landscape-report-dir", args.report_dir),
        ("--landscape-experiments-file", args.experiments_file),
    ):
        if value is not None:
            options.append(f"{flag}={value}")
    if args.quiet:
        options.append("-q")
    return int(pytest.main(options))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.experiments_file is not None:
            registry.load_experiments_toml(args.experiments_file)

        if args.command == "fetch-data":
            dataset = load_dataset(args.dataset, args.data_root or default_data_root())
            print(f"{dataset.name}: {len(dataset.x_train)} training and "
                  f"{len(dataset.x_test)} test samples, checksum {dataset.checksum[:16]}")
        elif args.command == "train":
            if args.snapshot_every is not None and args.trajectory_dir is None:
                raise ValueError(
                    f"--snapshot-every {args.snapshot_every} needs --trajectory-dir DIR, "
                    "the folder that receives the snapshots"
                )
            capture = None
            if args.trajectory_dir is not None:
                capture = Capture(args.trajectory_dir, every_steps=args.snapshot_every)
            cache = RunCache(args.cache_dir)
            for name in registry.resolve(args.experiments):
                experiment = registry.get(name)
                dataset = load_dataset(experiment.dataset, args.data_root or default_data_root())
                runs = cache.get_all(experiment, dataset, retrain=args.retrain, capture=capture)
                accuracies = ", ".join(f"{r.final_accuracy:.4f}" for r in runs)
                print(f"{name}: {len(runs)} runs in {cache.directory}; "
                      f"final test accuracy {accuracies}")
                if capture is not None:
                    print(f"{name}: trajectories in {capture.directory}")
        elif args.command == "sweep":
            return _sweep(args)
        elif args.command == "experiments":
            for name in registry.names():
                experiment = registry.get(name)
                print(f"{name:<16} {experiment.description}")
        elif args.command in PLANE_COMMANDS:
            # Imported here because it loads matplotlib, which the other commands do not need.
            from landscape.plane_commands import run_plane_command

            for path in _with_threads(args.threads, run_plane_command, args):
                print(f"wrote {path}")
    except (ValueError, DataError, RunNotCachedError, SweepError) as error:
        print(f"landscape: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
