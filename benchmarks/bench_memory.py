"""Peak memory of a ConvMixer training step with and without gradient checkpointing (docs/RESULTS.md, backbone API).

    python benchmarks/bench_memory.py                                  # both default models, table + JSON
    python benchmarks/bench_memory.py --models convmixer_768_32 --image-size 224 --batch 1 --json-out /tmp/m.json

For each model (random weights, training mode, one thread): one warm-up step, then one step (forward, loss,
backward) measured without and one with ``model.set_grad_checkpointing(True)``. The figure is the CPU allocator's
peak above its level when the step started (:func:`convmixer.profile.peak_cpu_memory`, from the profiler's record
of every allocation and free: measured, not estimated); parameter gradients already exist from the warm-up, so the
peak is activations and backward's temporaries. The gradients of the two steps are compared (max |diff|). Step
times are printed for the record only: they are single steps on a shared machine, and the profiler slows both.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from convmixer import create_model
from convmixer.profile import peak_cpu_memory

DEFAULTS = {  # model: (image size, batch size)
    "convmixer_fmnist": (28, 128),
    "convmixer_768_32": (112, 2),  # the paper's model that ran out of memory on 11 GB GPUs, at 1/4 of the pixels
}


def measure(name: str, size: int, batch: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.randn(batch, model.in_chans, size, size, generator=torch.Generator().manual_seed(1))
    grads: dict[bool, list[torch.Tensor]] = {}

    def step() -> None:
        model.zero_grad(set_to_none=False)
        model(x).logsumexp(1).mean().backward()

    step()  # allocate the gradients once
    out = {"model": name, "image_size": size, "batch_size": batch}
    for ckpt in (False, True):
        model.set_grad_checkpointing(ckpt)
        t0 = time.perf_counter()
        peak = peak_cpu_memory(step)
        key = "checkpointing" if ckpt else "plain"
        out[key] = {"peak_bytes": peak, "peak_mib": round(peak / 2**20, 1), "step_s": round(time.perf_counter() - t0, 2)}
        grads[ckpt] = [p.grad.clone() for p in model.parameters()]
    out["ratio"] = round(out["checkpointing"]["peak_bytes"] / out["plain"]["peak_bytes"], 3)
    out["max_abs_grad_diff"] = max(float((a - b).abs().max()) for a, b in zip(grads[False], grads[True]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULTS))
    ap.add_argument("--image-size", type=int, help="override every model's image size")
    ap.add_argument("--batch", type=int, help="override every model's batch size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        size, batch = DEFAULTS.get(name, (224, 1))
        rows.append(measure(name, args.image_size or size, args.batch or batch))
        r = rows[-1]
        print(f"{name:>22} {r['image_size']:>4}px batch {r['batch_size']:>3}: peak {r['plain']['peak_mib']:>8.1f} MiB plain, "
              f"{r['checkpointing']['peak_mib']:>8.1f} MiB checkpointed ({r['ratio']:.2f}x); max |grad diff| "
              f"{r['max_abs_grad_diff']:.1e}; step {r['plain']['step_s']} s / {r['checkpointing']['step_s']} s", flush=True)
    if args.json_out:
        from convmixer.io import atomic_write

        with atomic_write(args.json_out, "w") as f:
            json.dump({"torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                       "threads": args.threads, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
