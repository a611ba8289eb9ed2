"""Serving under load: `convmixer serve` against calling the model in one process (docs/RESULTS.md, "Serving").

    python benchmarks/bench_serve.py                                     # full size: both backends, JSON + table
    python benchmarks/bench_serve.py --backends torch --requests 200 --memory-requests 0    # a quick look

For each backend (torch: the folded model on the fast path; onnxruntime: its ONNX export), with
`convmixer serve` running in a child process (--max-batch 32 --max-wait-ms 5 by default):

1. memory: the server's resident size after 1,000 requests and after 10,000 (--memory-requests), at concurrency
   32, before anything else is sent; flat = within 10%.
2. per concurrency c = 1, 8, 32, three runs back to back:
   - direct: in this process, each upload's bytes are decoded and preprocessed exactly as the server does
     (ServedModel.preprocess) and run in batches of c images (the batch a server sees at concurrency c at best):
     images/s and latency per call;
   - served: the bounded load generator (convmixer.serve.run_load, loopback) sends one PNG per request from c
     concurrent clients: requests/s (= images/s), p50/p99 latency per request, failed requests, batches formed;
   - direct again.
   overhead = the mean of the two direct throughputs / the served throughput (1.0: serving costs nothing).
3. SIGTERM: the server drains and must exit 0.

The load generator runs on the same machine as the server (loopback), so on a small machine it takes CPU from it:
the served figures include the client's cost. The checkpoint is convmixer_fmnist with random weights unless
--checkpoint is given (speed does not depend on the weights). Requests are 28x28 grayscale PNGs (random pixels).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from convmixer.io import atomic_write
from convmixer.serve import LoadResult, ServerProcess, load_served_model, run_load

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "serve.json"
MODEL = "convmixer_fmnist"


def random_weights_checkpoint(directory: Path) -> Path:
    """convmixer_fmnist with random weights, saved as `save_checkpoint` writes it, with the dataset's facts."""
    from convmixer import create_model, save_checkpoint
    from convmixer.data import get_dataset_info

    info = get_dataset_info("fashion_mnist")
    torch.manual_seed(0)
    path = directory / f"{MODEL}-random.safetensors"
    save_checkpoint(create_model(MODEL).eval(), path, extra={"classes": list(info.classes), "mean": list(info.mean),
                                                              "std": list(info.std), "image_size": info.image_size})
    return path


def png_bodies(count: int, size: int = 28) -> list[tuple[bytes, str]]:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    bodies = []
    for _ in range(count):
        pixels = torch.randint(0, 256, (size, size), generator=g, dtype=torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(pixels, "L").save(buf, "PNG")
        bodies.append((buf.getvalue(), "image/png"))
    return bodies


def direct(model, bodies: list[tuple[bytes, str]], batch: int, images: int, time_limit_s: float) -> LoadResult:
    """Preprocess + run ``batch`` images per call in this process until ``images`` are done (or the time limit)."""
    for _ in range(3):  # warm-up
        model.predict([model.preprocess(bodies[j][0], "x") for j in range(batch)])
    result = LoadResult(requests=0, ok=0, concurrency=batch)
    start = time.perf_counter()
    while result.ok < images and time.perf_counter() - start < time_limit_s:
        chunk = [bodies[(result.ok + j) % len(bodies)][0] for j in range(batch)]
        t = time.perf_counter()
        model.predict([model.preprocess(data, "x") for data in chunk])
        result.latencies_ms.append((time.perf_counter() - t) * 1000)
        result.ok += batch
        result.requests += batch
    result.seconds = time.perf_counter() - start
    return result


def stats(url: str) -> dict:
    import httpx

    return httpx.get(f"{url}/stats", timeout=30).json()


def batches_between(before: dict, after: dict) -> dict:
    batches = after["batches"] - before["batches"]
    images = after["images"] - before["images"]
    sizes = {k: v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()}
    return {"batches": batches, "mean_batch": round(images / batches, 2) if batches else 0.0,
            "largest_batch": max((int(k) for k, v in sizes.items() if v > 0), default=0)}


def memory_run(server: ServerProcess, url: str, bodies, args) -> dict:
    """The server's resident size after 1,000 requests and after ``--memory-requests`` (concurrency 32)."""
    memory = {"rss_ready_mib": round(server.rss_bytes() / 2**20, 1)}
    first = min(1000, args.memory_requests)
    failed = 0
    for count, key in [(first, "rss_after_1000_mib"), (args.memory_requests - first, "rss_after_all_mib")]:
        if count:
            r = run_load(url, bodies, requests=count, concurrency=32, time_limit_s=args.memory_time_limit)
            failed += r.failed
            assert r.requests == count, f"the memory run stopped at {r.requests} of {count} (time limit)"
        memory[key] = round(server.rss_bytes() / 2**20, 1)
    growth = memory["rss_after_all_mib"] / memory["rss_after_1000_mib"] - 1
    memory.update({"requests": args.memory_requests, "failed": failed, "growth": round(growth, 4),
                   "flat_within_10pct": abs(growth) <= 0.10})
    return memory


def bench_backend(checkpoint: Path, backend: str, bodies, args) -> dict:
    """Per concurrency c: direct (batch c in this process), served (c clients), direct again; the overhead compares
    the served throughput with the mean of the two direct runs around it, so that a machine whose speed drifts (other
    jobs) weighs on both sides alike."""
    model = load_served_model(checkpoint, backend=backend, max_batch=args.max_batch, threads=args.threads)
    out: dict = {"runtime": model.runtime, "direct": {}, "served": {}}
    server_args = ["--checkpoint", str(checkpoint), "--backend", backend, "--max-batch", str(args.max_batch),
                   "--max-wait-ms", str(args.max_wait_ms), *(["--threads", str(args.threads)] if args.threads else [])]
    print(f"== {backend}: convmixer serve {' '.join(server_args)}", flush=True)
    with ServerProcess(server_args) as server:
        url = f"{server.url}/predict"
        if args.memory_requests:
            out["memory"] = memory_run(server, url, bodies, args)
            print(f"   memory: {out['memory']}", flush=True)
        for c in args.concurrency:
            around = [direct(model, bodies, c, args.requests, args.time_limit)]
            before = stats(server.url)
            r = run_load(url, bodies, requests=args.requests, concurrency=c, time_limit_s=args.time_limit)
            batching = batches_between(before, stats(server.url))
            around.append(direct(model, bodies, c, args.requests, args.time_limit))
            direct_ips = sum(d.throughput for d in around) / 2
            ratio = direct_ips / r.throughput if r.throughput else None
            out["direct"][str(c)] = {"throughput_ips": round(direct_ips, 2),
                                     "runs_ips": [round(d.throughput, 2) for d in around],
                                     "p50_ms": round(sum(d.p50_ms for d in around) / 2, 3),
                                     "p99_ms": round(max(d.p99_ms for d in around), 3),
                                     "images": sum(d.ok for d in around)}
            out["served"][str(c)] = {**r.as_dict(), **batching,
                                     "overhead_vs_direct": round(ratio, 3) if ratio else None}
            print(f"   concurrency {c:>2}: served {r.throughput:7.1f} requests/s, p50 {r.p50_ms:7.2f} ms, "
                  f"p99 {r.p99_ms:7.2f} ms, failed {r.failed}, mean batch {batching['mean_batch']}; direct "
                  f"{' / '.join(f'{d.throughput:.1f}' for d in around)} images/s, p50 "
                  f"{around[0].p50_ms:.2f} ms per call; overhead x{ratio:.2f}", flush=True)
        out["final_stats"] = stats(server.url)
        out["sigterm_exit_code"] = server.terminate()
    return out


def table(results: dict) -> str:
    rows = [("| backend | concurrency | served req/s | p50 ms | p99 ms | failed | mean batch | direct images/s "
             "(batch = concurrency; the runs before / after) | direct p50 ms per call | overhead (direct / served) |"),
            "|---|---|---|---|---|---|---|---|---|---|"]
    for backend, res in results["backends"].items():
        for c, s in res["served"].items():
            d = res["direct"][c]
            rows.append(f"| {backend} | {c} | {s['throughput_rps']:.1f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
                        f"{s['failed']} | {s['mean_batch']} | {d['throughput_ips']:.1f} "
                        f"({' / '.join(f'{x:.0f}' for x in d['runs_ips'])}) | {d['p50_ms']:.1f} | "
                        f"{s['overhead_vs_direct']:.2f} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, help="checkpoint to serve (default: convmixer_fmnist, random weights)")
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"], choices=("torch", "onnxruntime"))
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=1000, help="requests per concurrency level (default 1000)")
    p.add_argument("--time-limit", type=float, default=180.0, help="seconds per concurrency level at most")
    p.add_argument("--memory-requests", type=int, default=10_000, help="requests of the memory run (0: skip)")
    p.add_argument("--memory-time-limit", type=float, default=1200.0)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--images", type=int, default=64, help="distinct PNGs cycled through")
    p.add_argument("--threads", type=int, help="the model's threads, in this process and the server's (default: "
                                               "the library's, one per core)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()

    from convmixer.bench.machine import machine

    bodies = png_bodies(args.images)
    started = datetime.datetime.now().astimezone()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or random_weights_checkpoint(Path(tmp))
        weights = "given checkpoint" if args.checkpoint else "random weights (save_checkpoint of a fresh model)"
        print(f"model {MODEL if not args.checkpoint else checkpoint}: {weights}", flush=True)
        results = {
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "date": started.isoformat(timespec="seconds"),
            "model": MODEL if not args.checkpoint else str(args.checkpoint), "weights": weights,
            "settings": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "requests": args.requests,
                         "threads": args.threads,
                         "concurrency": args.concurrency, "memory_requests": args.memory_requests,
                         "request": "one 28x28 grayscale PNG (random pixels), Content-Type image/png"},
            "machine": {**machine(), "platform": platform.platform(), "loadavg_before": load_before},
            "backends": {b: bench_backend(Path(checkpoint), b, bodies, args) for b in args.backends},
        }
    results["machine"]["loadavg_after"] = os.getloadavg()
    results["seconds"] = round((datetime.datetime.now().astimezone() - started).total_seconds(), 1)
    failed = sum(s["failed"] for r in results["backends"].values() for s in r["served"].values())
    failed += sum(r.get("memory", {}).get("failed", 0) for r in results["backends"].values())
    results["failed_requests"] = failed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(table(results))
    print(f"wrote {args.out}; failed requests: {failed}; load average before/after: {load_before} / "
          f"{results['machine']['loadavg_after']}")
    exits = {b: r["sigterm_exit_code"] for b, r in results["backends"].items()}
    flat = {b: r.get("memory", {}).get("flat_within_10pct") for b, r in results["backends"].items()}
    print(f"SIGTERM exit codes: {exits}; memory flat within 10%: {flat}")
    return 0 if failed == 0 and all(v == 0 for v in exits.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
