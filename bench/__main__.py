"""Run the benchmarks and write their results to bench/results/<name>.json (and <name>.png if charted).

python -m bench                     every benchmark, full size
python -m bench pipeline --quick    one benchmark, reduced (results in <name>-quick.json/.png)
python -m bench load                200 concurrent calls, speech models stood in (a separate profile)
python -m bench soak --minutes 10   the real models, 16 calls at a time, for 10 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import foundation, languages, load, pipeline, soak

RESULTS = Path(__file__).parent / "results"

BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "foundation": lambda args: foundation.run(),  # already small: no quick version
    "pipeline": lambda args: pipeline.run(quick=args.quick, deep=args.deep),
    "languages": lambda args: languages.run(quick=args.quick),
    "load": lambda args: load.run(
        replace(load.QUICK if args.quick else load.FULL, **({"calls": args.calls} if args.calls else {}))
    ),
    "soak": lambda args: soak.run(
        replace(soak.FULL, minutes=args.minutes or (1.0 if args.quick else soak.FULL.minutes))
    ),
}
CHARTS: dict[str, Callable[[dict[str, Any], Path], Path]] = {"pipeline": pipeline.write_chart}
SUMMARIES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "pipeline": pipeline.summary,
    "languages": languages.summary,
    "load": load.summary_lines,
    "soak": soak.summary_lines,
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks named (all by default); print a summary of each."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="a reduced run (about two minutes each)")
    parser.add_argument(
        "--deep", action="store_true", help="pipeline: also transcribe every Asterisk prompt offline (+5 min)"
    )
    parser.add_argument("--minutes", type=float, help="soak: how long (default 10; 1 with --quick)")
    parser.add_argument(
        "--calls", type=int, help="load: how many concurrent calls (default 200; results in load-N.json)"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    RESULTS.mkdir(exist_ok=True)
    for name in args.names or list(BENCHMARKS):
        started = time.time()
        load_before = os.getloadavg()
        figures = BENCHMARKS[name](args)
        figures["_meta"] = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 1),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_average_1_5_15_before_after": [
                [round(v, 2) for v in load_before],
                [round(v, 2) for v in os.getloadavg()],
            ],
            "size": "quick" if args.quick else "deep" if args.deep else "full",
        }
        stem = f"{name}-quick" if args.quick and name != "foundation" else name
        stem = f"{stem}-{args.calls}" if name == "load" and args.calls else stem
        path = RESULTS / f"{stem}.json"
        path.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"{name}: wrote {path} in {figures['_meta']['seconds']} s")
        if name in CHARTS:
            print(f"{name}: wrote {CHARTS[name](figures, path.with_suffix('.png'))}")
        if name in SUMMARIES:
            for line in SUMMARIES[name](figures):
                print(f"  {line}")
        else:
            for key, value in figures.items():
                if not key.startswith("_"):
                    print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
