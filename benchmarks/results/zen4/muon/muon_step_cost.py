"""One optimizer step of the default model (ConvMixer-128/8 k5 p2, channels-last): AdamW alone against Muon for the
eight 128x128 channel-mixing matrices + AdamW for the rest (`optim.muon=true`) against Muon for every convolution
(`optim.muon_all_convs=true`: the stem's and the depthwise filters too), medians of 30 steps taken in turn.
Output: muon_step_cost.txt (2026-12-06, ninth session: torch.optim.Muon, Newton-Schulz in bf16 everywhere),
muon_step_cost-fp32.txt (tenth session: the project's Muon, Newton-Schulz in fp32 on the CPU) and
muon_step_cost-allconvs.txt (twelfth session: with the third column).

    python benchmarks/results/zen4/muon/muon_step_cost.py                      # native (bf16 CPU: Zen 4)
    CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/results/zen4/muon/muon_step_cost.py                  # as on an AVX2-only CPU
"""

import statistics
import time

import torch

from convmixer.factory import create_model
from convmixer.training.config import OptimConfig
from convmixer.training.optim import build_optimizer


def main() -> None:
    for threads in (1, 2):
        torch.set_num_threads(threads)
        opts = {}
        for name, muon, all_convs in (("adamw", False, False), ("muon", True, False), ("all", True, True)):
            model = create_model("convmixer_fmnist", in_chans=1, num_classes=10).to(memory_format=torch.channels_last)
            config = OptimConfig(lr=0.004, eps=1e-8, weight_decay=0.05, muon=muon, muon_all_convs=all_convs)
            opts[name] = (model, build_optimizer(model, config), {})
        times = {name: [] for name in opts}
        for _ in range(30):
            for name, (model, opt, _) in opts.items():
                for p in model.parameters():
                    p.grad = torch.randn_like(p) * 1e-3
                t = time.perf_counter()
                opt.step()
                times[name].append(time.perf_counter() - t)
        med = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
        print(f"threads {threads}: AdamW {med['adamw']:.2f} ms, Muon + AdamW {med['muon']:.2f} ms "
              f"({med['muon'] / med['adamw']:.1f}x), Muon for every conv {med['all']:.2f} ms "
              f"({med['all'] / med['adamw']:.1f}x), ATen capability {torch.backends.cpu.get_cpu_capability()}")


if __name__ == "__main__":
    main()
