"""The whole benchmark suite, one table after another: decomposition speed (per matrix, whole model, scaling),
peak memory, inference latency.

    python benchmarks/run.py            # the full suite on VGG16 (about 20 minutes on 2 cores)
    python benchmarks/run.py --quick    # small configurations, under a minute: what CI runs
"""
import argparse
import decompose_speed, memory, latency

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='small configurations only')
    ap.add_argument('--repeats', type=int, default=3, help='runs per timing of the speed tables; the median is reported')
    a = ap.parse_args()
    decompose_speed.main(a.quick, a.repeats)
    print()
    memory.main(a.quick)
    print()
    latency.main(a.quick, 0.2 if a.quick else 2.0)
