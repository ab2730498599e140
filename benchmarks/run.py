"""Benchmark entry point: the same as ``flowbridge bench``.

    python benchmarks/run.py --preset quick          # the target size, a few minutes
    python benchmarks/run.py --preset axes           # what benchmarks/results/ holds

See ``flowbridge.bench`` for what is timed and how.
"""

from flowbridge.cli import bench

if __name__ == "__main__":
    bench()
