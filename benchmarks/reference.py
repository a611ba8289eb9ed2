"""The reference ConvMixer for benchmark scripts: the paper's network as one plain ``nn.Sequential``.

It lives in :mod:`convmixer.bench.reference` so that ``convmixer bench`` can import it; this module re-exports it.

    from reference import build_reference, reference_from   # from the benchmarks/ directory
    ref = build_reference(256, 8, kernel_size=9, patch_size=2, num_classes=10, in_chans=1)
"""

from convmixer.bench.reference import SkipAdd, build_reference, reference_from

__all__ = ["SkipAdd", "build_reference", "reference_from"]
