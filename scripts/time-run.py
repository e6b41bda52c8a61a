#!/usr/bin/env python3
"""Times a whole sagellm-benchmark process, as a user waits for it: median wall time and CPU
(user + system, the process and its threads) over N runs, each into a fresh output folder.

    python3 scripts/time-run.py N BIN ARGS...
    python3 scripts/time-run.py 10 target/release/sagellm-benchmark run --workload year1 --backend mock -q

Alternate two binaries round by round to compare them on a shared machine.
"""
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    runs, command = int(sys.argv[1]), sys.argv[2:]
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(runs):
            out = f"{scratch}/run{i}"
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(command + ["-o", out], check=True, stdout=subprocess.DEVNULL)
            walls.append((time.perf_counter() - start) * 1000)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
            shutil.rmtree(out, ignore_errors=True)
    print(
        f"wall median {statistics.median(walls):.1f} ms (min {min(walls):.1f}, max {max(walls):.1f}); "
        f"CPU median {statistics.median(cpus):.1f} ms; {runs} runs"
    )


if __name__ == "__main__":
    main()
