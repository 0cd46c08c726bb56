"""Benchmark: MuseV's temporal feed-forward whole against in CPU row chunks, at the real layer shapes.

    python bench/bench_feed_forward.py [--reps 21] [--frames 13] [--latent 16]

One `musev_core.temporal.FeedForward` per SD1.5 level (320/640/1280 channels; rows = 2 CFG chunks x frames x the
level's latent cells), random weights, fp32 on CPU. Each is timed running as one GEMM chain (`_rows`) and as
`forward` runs it (row chunks where `feed_forward_row_chunks` says so), with alternating reps; reported: median ms
of each, the chunk count, and the max |difference| of the outputs. No ComfyUI needed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from musev_core.temporal import FeedForward, feed_forward_row_chunks  # noqa: E402

LEVELS = ((320, 1), (640, 2), (1280, 4), (1280, 8))  # channels, latent downscale


def bench_level(channels: int, rows: int, reps: int) -> dict:
    torch.manual_seed(0)
    ff = FeedForward(channels)
    x = torch.randn(rows, 1, channels)
    times = {"whole": [], "forward": []}
    with torch.no_grad():
        whole, chunked = ff._rows(x), ff(x)
        for _ in range(reps):
            for name, run in (("whole", ff._rows), ("forward", ff)):
                started = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - started)
    return {"channels": channels, "rows": rows,
            "chunks": feed_forward_row_chunks(rows, channels, x.element_size(), x.device),
            "whole_ms": 1e3 * statistics.median(times["whole"]),
            "forward_ms": 1e3 * statistics.median(times["forward"]),
            "max_abs_diff": float((whole - chunked).abs().max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument("--frames", type=int, default=13, help="frames per CFG chunk (1 condition + generated)")
    parser.add_argument("--latent", type=int, default=16, help="latent cells per side at the 320-channel level")
    args = parser.parse_args()
    results = []
    for channels, scale in LEVELS:
        side = -(-args.latent // scale)
        result = bench_level(channels, 2 * args.frames * side * side, args.reps)
        results.append(result)
        print(f"{channels:5d} ch x {result['rows']:6d} rows: whole {result['whole_ms']:7.1f} ms, "
              f"forward {result['forward_ms']:7.1f} ms in {result['chunks']} chunk(s), "
              f"max|diff| {result['max_abs_diff']:.1e}")
    print("RESULT " + json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
