"""Run every benchmark and write its results to bench/results/<name>.json."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from bench import foundation

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    """Run the benchmarks; print a summary line per figure."""
    RESULTS.mkdir(exist_ok=True)
    for module in (foundation,):
        name = module.__name__.rsplit(".", 1)[-1]
        started = time.time()
        figures = module.run()
        figures["_meta"] = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 1),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        }
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"{name}: wrote {path}")
        for key, value in figures.items():
            if not key.startswith("_"):
                print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
