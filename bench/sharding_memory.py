"""Parameter bytes per device after load, for tensor-parallel sizes 1/2/4/8 (issue 12, point 2).

    python bench/sharding_memory.py --preset bge-large --out bench/results/sharding-memory-bge-large.json

Each size runs in a fresh process with JAX forced to 8 host CPU devices: `tei_jax.load(...,
data_parallel_size=1, tensor_parallel_size=M)` on the first M devices, then the bytes of every
live device buffer are summed per device (jax.live_arrays, shard by shard) and the process's
peak resident memory is read. CPU "devices" share the host's RAM, so the per-device figure is
what one accelerator would hold; the peak RSS shows that loading kept one copy of the weights
(parameters are placed per tensor as read, never assembled whole on one device).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(folder: str, tp: int, dtype: str) -> dict:
    import jax

    import tei_jax
    from tei_jax.sharding import live_bytes_per_device

    model = tei_jax.load(folder, dtype=dtype, data_parallel_size=1, tensor_parallel_size=tp,
                         devices=jax.devices()[:tp], compile_cache="none")
    per_device = live_bytes_per_device()
    info = model.sharding_info
    return {"tensor_parallel_size": tp, "dtype": dtype, "devices": len(per_device),
            "live_bytes_per_device": per_device,
            "max_live_mib_per_device": max(per_device.values()) / 2**20,
            "parameters_split": info["parameters_split"], "parameters": info["parameters"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="bge-large")
    parser.add_argument("--sizes", default="1,2,4,8")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", nargs=3, metavar=("FOLDER", "TP", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.one[2])))
        return
    from tei_jax.bench import presets

    folder = str(presets.materialize(presets.PRESETS[args.preset]))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO))
    rows = []
    for dtype in args.dtypes.split(","):
        for tp in (int(n) for n in args.sizes.split(",")):
            done = subprocess.run([sys.executable, __file__, "--one", folder, str(tp), dtype], env=env,
                                  capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{dtype:9} tp {tp}: {row['max_live_mib_per_device']:8.1f} MiB per device on {row['devices']} "
                  f"device(s), {row['parameters_split']}/{row['parameters']} split, peak RSS {row['peak_rss_mib']:.0f} MiB")
    result = {"preset": args.preset, "description": presets.PRESETS[args.preset].description, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
