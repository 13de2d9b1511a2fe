"""Peak memory of adversarial-set generation streamed from HDF5: 100,000 images against 10,000.

`generate_adversarial_set` given an `h5py.Dataset` reads, attacks and writes `chunk_size`
images at a time, so its peak memory should not grow with the number of images. Each
measurement runs in a fresh process (peak RSS is per process): FGSM on MNIST-NET-f over
a streamed HDF5 source of 10,000 and of 100,000 images, and, for contrast, 100,000
images loaded into memory first. Prints each peak and the ratios; the target is a
100,000 / 10,000 ratio of at most 1.5.

    python benchmarks/memory.py [--sizes 10000 100000] [--chunk-size 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(source: str, model_path: str, out: str, chunk_size: int, in_memory: bool) -> None:
    import h5py

    from saliency_detect.attacks import generate_adversarial_set
    from saliency_detect.models import load_model

    model = load_model(model_path, compile=False)
    start = time.perf_counter()
    with h5py.File(source, "r") as file:
        x = file["x"][()] if in_memory else file["x"]
        generate_adversarial_set(
            model, x, None, "fgsm", {"eps": 0.1}, out, chunk_size=chunk_size, verbose=False
        )
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    print(json.dumps({"peak_mb": peak_mb, "seconds": seconds}))


def _write_source(path: Path, n: int, block: int = 10_000) -> None:
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as file:
        data = file.create_dataset("x", shape=(n, 28, 28, 1), dtype="float32", chunks=(256, 28, 28, 1))
        for start in range(0, n, block):
            stop = min(start + block, n)
            data[start:stop] = rng.random((stop - start, 28, 28, 1), dtype=np.float32)


def _measure(source: Path, model: Path, out: Path, chunk_size: int, in_memory: bool) -> dict:
    command = [sys.executable, __file__, "--child", str(source), str(model), str(out), str(chunk_size)]
    if in_memory:
        command.append("--in-memory")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(10_000, 100_000), metavar=("SMALL", "LARGE"))
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        source, model, out, chunk_size = args.child
        _child(source, model, out, int(chunk_size), args.in_memory)
        return

    from saliency_detect.models import mnist_net_f, save_model

    small, large = args.sizes
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_model(mnist_net_f(), folder / "f.keras")
        for n in (small, large):
            _write_source(folder / f"x{n}.h5", n)
        runs = {
            f"streamed, {small:,} images": _measure(
                folder / f"x{small}.h5", folder / "f.keras", folder / "a.h5", args.chunk_size, False
            ),
            f"streamed, {large:,} images": _measure(
                folder / f"x{large}.h5", folder / "f.keras", folder / "b.h5", args.chunk_size, False
            ),
            f"in memory, {large:,} images": _measure(
                folder / f"x{large}.h5", folder / "f.keras", folder / "c.h5", args.chunk_size, True
            ),
        }
    print(f"FGSM (eps 0.1) on MNIST-NET-f, chunk size {args.chunk_size}; peak RSS of a fresh process\n")
    print("| run | peak RSS (MB) | time (s) | images/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, run in runs.items():
        n = small if f"{small:,} images" in name and "in memory" not in name else large
        print(f"| {name} | {run['peak_mb']:.0f} | {run['seconds']:.1f} | {n / run['seconds']:.0f} |")
    streamed_small, streamed_large, loaded = runs.values()
    ratio = streamed_large["peak_mb"] / streamed_small["peak_mb"]
    verdict = "met" if ratio <= 1.5 else "NOT met"
    print(f"\nstreamed {large:,} / {small:,}: {ratio:.2f}x peak memory (target <= 1.5x: {verdict})")
    print(f"in memory / streamed, {large:,} images: {loaded['peak_mb'] / streamed_large['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
