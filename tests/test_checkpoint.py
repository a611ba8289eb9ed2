import argparse
import errno
import os
import pickle

import pytest
import torch

from convmixer import CheckpointError, ConvMixer, build_from_checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from convmixer.checkpoint import convert_layout, detect_layout, official_to_timm, timm_to_official


def seeded(depth=2, num_classes=5, seed=0, **kw):
    torch.manual_seed(seed)
    model = ConvMixer(8, depth, kernel_size=3, patch_size=2, num_classes=num_classes, **kw)
    with torch.no_grad():  # non-trivial BN statistics, so a swapped buffer would show
        model(torch.randn(4, 3, 8, 8))
    return model.eval()


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))


def test_official_keys_match_the_reference_table():
    official = timm_to_official(seeded(depth=3).state_dict())
    for key in ["0.weight", "2.running_mean", "3.0.fn.0.weight", "5.0.fn.2.bias", "4.1.weight", "5.3.num_batches_tracked",
                "8.weight", "8.bias"]:
        assert key in official, key
    assert detect_layout(official) == "official"


def test_layout_round_trip_both_ways():
    sd = seeded().state_dict()
    official = convert_layout(sd, "official")
    back = convert_layout(official, "timm")
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    assert convert_layout(official, "official") == official
    with pytest.raises(CheckpointError, match="official ConvMixer layout"):
        official_to_timm({"0.weight": torch.zeros(1), "9.weight": torch.zeros(1)})


@pytest.mark.parametrize("fmt", ["official.pth.tar", "timm.pth", "ddp.pth.tar", "own.safetensors", "official.safetensors",
                                 "model_wrapper.pt", "compiled.pth"])
def test_same_outputs_after_round_trip_through_each_layout(tmp_path, fmt):
    src = seeded()
    want = src(X)
    path = tmp_path / f"w.{fmt}"
    sd = src.state_dict()
    if fmt == "official.pth.tar":
        torch.save({"state_dict": timm_to_official(sd), "epoch": 150, "arch": "convmixer",
                    "args": argparse.Namespace(lr=0.01, model="convmixer_1536_20")}, path)
    elif fmt == "timm.pth":
        torch.save(sd, path)
    elif fmt == "ddp.pth.tar":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    elif fmt == "own.safetensors":
        save_checkpoint(src, path)
    elif fmt == "official.safetensors":
        save_checkpoint(src, path, layout="official")
    elif fmt == "model_wrapper.pt":
        torch.save({"model": sd, "optimizer": {"state": {}}}, path)
    elif fmt == "compiled.pth":
        torch.save({f"_orig_mod.{k}": v for k, v in sd.items()}, path)
    dst = seeded(seed=1)
    assert not torch.allclose(dst(X), want)
    report = load_checkpoint(dst, path)
    assert report.ok
    torch.testing.assert_close(dst(X), want, rtol=0, atol=0)


@pytest.mark.parametrize("api", ["add_safe_globals", "none"])
def test_older_torch_without_scoped_safe_globals(tmp_path, monkeypatch, api):
    """torch 2.4 has only add_safe_globals, torch 2.3 neither: plain weights still load, and a timm checkpoint
    with its argparse.Namespace loads where an allowlist exists and is refused (never unpickled) where none does."""
    monkeypatch.delattr(torch.serialization, "safe_globals")
    if api == "none":
        monkeypatch.delattr(torch.serialization, "add_safe_globals")
    src = seeded()
    plain, timm_style = tmp_path / "plain.pth", tmp_path / "timm.pth.tar"
    torch.save(src.state_dict(), plain)
    torch.save({"state_dict": src.state_dict(), "args": argparse.Namespace(lr=0.01)}, timm_style)
    assert load_checkpoint(seeded(seed=1), plain).ok
    torch.serialization.clear_safe_globals()
    try:
        if api == "none":
            with pytest.raises(CheckpointError, match="refused: its pickle refers to argparse.Namespace"):
                load_checkpoint(seeded(seed=1), timm_style)
        else:
            assert load_checkpoint(seeded(seed=1), timm_style).ok
    finally:
        torch.serialization.clear_safe_globals()  # add_safe_globals is process-wide: leave no trace for other tests


def test_ema_weights_are_chosen_on_request(tmp_path):
    a, b = seeded(seed=0), seeded(seed=1)
    path = tmp_path / "ema.pth.tar"
    torch.save({"state_dict": a.state_dict(), "state_dict_ema": b.state_dict()}, path)
    m = seeded(seed=2)
    load_checkpoint(m, path)
    torch.testing.assert_close(m(X), a(X))
    load_checkpoint(m, path, use_ema=True)
    torch.testing.assert_close(m(X), b(X))
    torch.save({"state_dict": a.state_dict()}, path)
    with pytest.raises(CheckpointError, match="no EMA"):
        load_checkpoint(m, path, use_ema=True)
    # a weights file keeps one set of weights: asking it for the EMA is refused, not answered with the weights
    weights = save_checkpoint(a, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="w.safetensors holds no EMA"):
        load_checkpoint(m, weights, use_ema=True)


def test_mismatch_names_keys_and_shapes(tmp_path):
    path = save_checkpoint(seeded(num_classes=1000), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"head.weight \[1000, 8\] in file vs \[10, 8\] in model"):
        load_checkpoint(seeded(num_classes=10), path)
    with pytest.raises(CheckpointError, match="missing from file: blocks.2"):
        load_checkpoint(seeded(depth=3, num_classes=1000), path)


def test_non_strict_loads_what_fits_for_fine_tuning(tmp_path):
    src = seeded(num_classes=1000)
    path = save_checkpoint(src, tmp_path / "w.safetensors")
    dst = seeded(num_classes=10, seed=3)
    head_before = dst.head.weight.clone()
    report = load_checkpoint(dst, path, strict=False)
    assert [k for k, _, _ in report.mismatched] == ["head.weight", "head.bias"]
    assert not report.missing and not report.unexpected
    torch.testing.assert_close(dst.blocks[1][1].weight, src.blocks[1][1].weight)
    torch.testing.assert_close(dst.head.weight, head_before)


def test_strict_failure_loads_nothing(tmp_path):
    path = save_checkpoint(seeded(num_classes=1000), tmp_path / "w.safetensors")
    dst = seeded(num_classes=10, seed=3)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointError):
        load_checkpoint(dst, path)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_and_corrupt_files(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(seeded().state_dict(), path)
    else:
        save_checkpoint(seeded(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(seeded(), path)
    path.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(seeded(), path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(seeded(), tmp_path / "nope.pth")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/convmixer_pwned",))


def test_pickled_code_is_never_executed(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": seeded().state_dict(), "payload": Evil()}, f)
    torch.save({"state_dict": seeded().state_dict(), "payload": Evil()}, tmp_path / "evil2.pth")
    with pytest.raises(CheckpointError, match="refused: its pickle refers to .*posix.system"):
        load_checkpoint(seeded(), path)  # a bare pickle is not even a torch file
    with pytest.raises(CheckpointError, match="refused: its pickle refers to posix.system"):
        load_checkpoint(seeded(), tmp_path / "evil2.pth")
    assert not os.path.exists("/tmp/convmixer_pwned")


def test_save_is_atomic_and_keeps_config(tmp_path, monkeypatch):
    src = seeded()
    path = save_checkpoint(src, tmp_path / "w.safetensors", model_name="convmixer_256_8_ks5_p2", extra={"epoch": 4})
    old = path.read_bytes()
    ckpt = read_checkpoint(path)
    assert ckpt.model_config == src.config() and ckpt.model_name == "convmixer_256_8_ks5_p2"
    assert ckpt.metadata == {"epoch": 4}

    # a crash in the middle of writing leaves the old file intact and no temporary file behind
    import convmixer.checkpoint as ck

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save", boom)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(seeded(seed=9), path)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["w.safetensors"]


def test_save_errors(tmp_path):
    with pytest.raises(CheckpointError, match="safetensors"):
        save_checkpoint(seeded(), tmp_path / "w.pth")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="cannot write"):
        save_checkpoint(seeded(), blocker / "w.safetensors")


def test_build_from_checkpoint(tmp_path):
    src = seeded(act="relu")
    path = save_checkpoint(src, tmp_path / "w.safetensors")
    model = build_from_checkpoint(path).eval()
    assert model.act == "relu"
    torch.testing.assert_close(model(X), src(X))
    # a released file has no config: the user names the model
    official = tmp_path / "released.pth.tar"
    torch.save({"state_dict": timm_to_official(src.state_dict())}, official)
    with pytest.raises(CheckpointError, match="--model"):
        build_from_checkpoint(official)
    model = build_from_checkpoint(official, "convmixer_256_8_ks5_p2", dim=8, depth=2, kernel_size=3, num_classes=5,
                                  act="relu").eval()
    torch.testing.assert_close(model(X), src(X))
    with pytest.raises(CheckpointError, match="does not fit"):
        build_from_checkpoint(official, "convmixer_256_8_ks5_p2")


@pytest.mark.parametrize("how", ["pickle protocol 2", "pickle protocol 4", "torch.save"])
def test_a_pickle_with_code_is_refused_and_says_why_without_torchs_warning(tmp_path, how, recwarn):
    path = tmp_path / "evil.pt"
    if how == "torch.save":
        torch.save({"model": Evil()}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"model": Evil()}, f, protocol=int(how[-1]))
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    message = str(e.value)
    assert "refused" in message and "posix.system" in message and "code" in message, message
    assert "corrupt" not in message and "\n" not in message
    assert not recwarn.list, [str(w.message) for w in recwarn.list]
    assert not os.path.exists("/tmp/convmixer_pwned")


@pytest.mark.parametrize("name", ["w.pt", "w.pth.tar", "w.safetensors"])
def test_an_empty_file_is_a_one_line_error(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"w\..* is empty \(0 bytes\)"):
        read_checkpoint(tmp_path / name)


def test_a_file_that_cannot_be_read_says_why(tmp_path, monkeypatch):
    import convmixer.checkpoint as ck

    pt = tmp_path / "w.pt"
    torch.save(seeded().state_dict(), pt)
    st = save_checkpoint(seeded(), tmp_path / "w.safetensors")

    def denied(path, *args, **kwargs):  # what chmod 000 does to anyone but root
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(ck, "open", denied, raising=False)
    for path in (pt, st):
        with pytest.raises(CheckpointError, match=f"cannot read {path}: Permission denied"):
            read_checkpoint(path)
