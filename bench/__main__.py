"""`python -m bench`: run the benchmark and write docs/benchmarks.md.

Examples::

    python -m bench --install            # the full run (~20 min on 2 cores)
    python -m bench --smoke              # seconds: tiny images, a few URLs, c=1
    python -m bench --cases ours-local,floor --concurrency 1,4 --duration 3
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.images import DEFAULT_CACHE, ImageType
from bench.report import CASES
from bench.run import DOCS, RESULTS, Options, command_line, rerender, run


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def _cases(text: str) -> tuple[str, ...]:
    chosen = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in chosen if c not in CASES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"cases are {', '.join(CASES)}; got {text!r}")
    return chosen


def _types(text: str) -> tuple[ImageType, ...]:
    try:
        chosen = tuple(ImageType(t.strip()) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not chosen:
        raise argparse.ArgumentTypeError("no image type")
    return chosen


def parse_args(argv: Sequence[str]) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark our IIIF stack against IIPImage and the codec floor.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny images, 4 URLs per list, c=1, 1 s steps, one run, no profile unless "
        "--profile-seconds is given (seconds)",
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="apt-get install iipimage-server, lighttpd and wrk when missing "
        "(also when BENCH_INSTALL=1)",
    )
    parser.add_argument(
        "--cases",
        type=_cases,
        default=CASES,
        help=f"comma-separated subset of {','.join(CASES)} (default: all)",
    )
    parser.add_argument(
        "--types",
        type=_types,
        default=tuple(ImageType),
        help=f"comma-separated subset of {','.join(t.value for t in ImageType)} (default: all)",
    )
    parser.add_argument("--concurrency", type=_ints, default=(1, 4, 16), help="default 1,4,16")
    parser.add_argument(
        "--duration", type=float, default=2.0, help="seconds per warm step (default 2)"
    )
    parser.add_argument(
        "--cold-duration",
        type=float,
        default=5.0,
        help="upper bound in seconds of a cold pass (default 5)",
    )
    parser.add_argument("--runs", type=int, default=2, help="repetitions of every step (default 2)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many URLs per list")
    parser.add_argument(
        "--api", type=int, choices=(2, 3), default=2, help="Image API our stack is driven with"
    )
    parser.add_argument(
        "--profile-seconds",
        type=float,
        default=None,
        help="py-spy profile length per load (0: none; default 15, 0 with --smoke)",
    )
    parser.add_argument("--client", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument("--out", type=Path, default=DOCS, help="the markdown report")
    parser.add_argument("--results", type=Path, default=RESULTS, help="raw results folder")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="image cache folder")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: rewrite --out from an earlier run's results.json",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return Options(
        smoke=args.smoke,
        install=args.install,
        cases=args.cases,
        types=args.types,
        concurrency=args.concurrency,
        duration_s=args.duration,
        cold_duration_s=args.cold_duration,
        runs=args.runs,
        limit=args.limit,
        api=args.api,
        profile_s=_profile_seconds(args.profile_seconds, args.smoke),
        client=args.client,
        markdown=args.out,
        results_dir=args.results,
        cache_dir=args.cache,
        command=command_line(argv),
        render=args.render,
    )


def _profile_seconds(given: float | None, smoke: bool) -> float:
    # A smoke run profiles only when asked: py-spy's start-up would double it.
    if given is not None:
        return given
    return 0.0 if smoke else 15.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or re-render); exit status 0 when a report was written."""
    args = sys.argv[1:] if argv is None else list(argv)
    options = parse_args(args)
    if options.render is not None:
        rerender(options.render, options.markdown)
        print(f"bench: report in {options.markdown}")
        return 0
    run(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
