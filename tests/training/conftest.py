import pytest

from convmixer.training.config import load_config

TINY = [
    "model.name=convmixer_256_8_ks5_p2", "model.dim=16", "model.depth=2", "model.kernel_size=3", "model.patch_size=4",
    "data.dataset=synthetic", "data.synthetic_size=256", "data.synthetic_eval_size=64", "data.synthetic_image_size=16",
    "data.synthetic_chans=1", "data.synthetic_classes=4", "data.batch_size=32", "data.eval_batch_size=64",
    "schedule.epochs=2", "optim.lr=0.005", "run.progress=false", "run.tensorboard=false", "run.plain=true",
    "run.ema_decay=0", "aug.test_flip=false",  # the default recipe's EMA and flip TTA: on where a test asks for them
    "schedule.resize_from=0",  # ... and its progressive resizing (test_engine.py turns it on where it tests it)
]


@pytest.fixture
def tiny_cfg(tmp_path):
    """A seconds-long run on synthetic 16x16 grayscale data: 8 steps per epoch."""

    def make(*assignments: str, name: str = "run"):
        return load_config("fmnist", [*TINY, f"run.out_dir={tmp_path}", f"run.name={name}", *assignments])

    return make
