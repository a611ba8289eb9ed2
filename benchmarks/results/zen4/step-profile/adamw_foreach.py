"""AdamW's step for the default model (ConvMixer-128/8 k5 p2, 70 tensors) with torch's single-tensor loop and with
foreach, interleaved in one process, 2 threads: median ms of the step alone, and whether the weights agree to the bit.

    python benchmarks/results/zen4/step-profile/adamw_foreach.py
"""
import statistics
import time

import torch

from convmixer.models import build_registered


def main() -> None:
    torch.set_num_threads(2)
    sides = {}
    for foreach in (False, True):
        torch.manual_seed(0)
        model = build_registered("convmixer_fmnist", in_chans=1, num_classes=10)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, eps=1e-8, weight_decay=0.05, foreach=foreach)
        sides[foreach] = (model, opt)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    times = {False: [], True: []}
    for _ in range(40):
        for foreach, (model, opt) in sides.items():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            start = time.perf_counter()
            opt.step()
            times[foreach].append(time.perf_counter() - start)
    same = all(torch.equal(a, b) for a, b in zip(sides[False][0].parameters(), sides[True][0].parameters()))
    loop, multi = (1000 * statistics.median(times[k][5:]) for k in (False, True))
    print(f"AdamW step: single-tensor {loop:.2f} ms, foreach {multi:.2f} ms ({loop / multi:.2f}x); "
          f"weights after 40 steps identical: {same}")


if __name__ == "__main__":
    main()
