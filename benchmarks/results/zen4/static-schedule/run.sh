#!/bin/bash
# The kernels' OpenMP schedule, dynamic single chunks (a0653b4) against static shares of the batch (this change),
# inside one training run of the default recipe (benchmarks/ab_kernels.py), native bf16 and AVX2 fp32 emulated.
set -e
cd "$(dirname "$0")/../../../.."
git show a0653b4:src/convmixer/fast/kernels.c > /tmp/kernels-a0653b4.c
D=benchmarks/results/zen4/static-schedule
.venv/bin/python benchmarks/ab_kernels.py /tmp/kernels-a0653b4.c --config fmnist_b32 --steps 1500 --json-out $D/native.json
CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
    .venv/bin/python benchmarks/ab_kernels.py /tmp/kernels-a0653b4.c --config fmnist_b32 --steps 1500 --json-out $D/avx2-emulated.json
