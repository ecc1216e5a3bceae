"""The ``landscape`` command line.

Examples::

    landscape fetch-data                 # fetch and verify MNIST into ./data
    landscape train paper-adam           # train and cache all runs of an experiment
    landscape experiments                # list registered experiments
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from landscape import experiment as registry
from landscape.cache import RunCache, default_cache_dir
from landscape.data import DataError, default_data_root, load_dataset

logger = logging.getLogger("landscape.cli")


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
    _add_common(train)

    listing = commands.add_parser("experiments", help="list registered experiments")
    _add_common(listing)
    return parser


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
            cache = RunCache(args.cache_dir)
            for name in registry.resolve(args.experiments):
                experiment = registry.get(name)
                dataset = load_dataset(experiment.dataset, args.data_root or default_data_root())
                runs = cache.get_all(experiment, dataset, retrain=args.retrain)
                accuracies = ", ".join(f"{r.final_accuracy:.4f}" for r in runs)
                print(f"{name}: {len(runs)} runs in {cache.directory}; "
                      f"final test accuracy {accuracies}")
        elif args.command == "experiments":
            for name in registry.names():
                experiment = registry.get(name)
                print(f"{name:<16} {experiment.description}")
    except (ValueError, DataError) as error:
        print(f"landscape: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
