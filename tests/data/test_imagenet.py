"""The ImageNet-1k class names that predict shows for the released paper weights."""

import json

import torch
from PIL import Image

from convmixer import create_model
from convmixer.checkpoint import timm_to_official
from convmixer.cli import main
from convmixer.data.imagenet import imagenet_classes, imagenet_synsets
from convmixer.inference import load_for_inference


def test_the_list_is_ilsvrc_2012_in_class_folder_order():
    synsets = imagenet_synsets()
    wnids = [w for w, _ in synsets]
    assert len(synsets) == 1000 and len(set(wnids)) == 1000
    assert wnids == sorted(wnids)  # ImageFolder order: class index i is the i-th sorted folder
    names = imagenet_classes()
    assert names[:3] == ["tench", "goldfish", "great white shark"] and names[-1] == "toilet tissue"
    assert synsets[0] == ("n01440764", "tench, Tinca tinca")


def test_predict_names_imagenet_classes_for_released_weights(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("convmixer_512_16_ks8_p7")  # the smallest registered ImageNet model
    path = tmp_path / "convmixer_512_16_ks8_p7.pth.tar"
    torch.save(timm_to_official(model.state_dict()), path)  # a released file: bare official-layout weights
    info = load_for_inference(path, "convmixer_512_16_ks8_p7")
    assert info.classes == imagenet_classes()
    image = tmp_path / "x.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    assert main(["predict", "--checkpoint", str(path), "--model", "convmixer_512_16_ks8_p7", "--top-k", "3",
                 "--json", str(image)]) == 0
    top = json.loads(capsys.readouterr().out.strip())["top"]
    assert [t["class"] for t in top] == [imagenet_classes()[t["index"]] for t in top]
    assert not any(t["class"].startswith("class ") for t in top)
