"""Encoder registry, presets and the local-weights path (tiny timm models, built here)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from srmil.errors import ConfigError, SrmilError
from srmil.features.encoders import (
    ENCODERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    Preprocess,
    create_encoder,
    describe_encoders,
)


def _batch(n: int = 2, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    monkeypatch.setenv("SRMIL_WEIGHTS_DIR", str(d))
    return d


def test_registry_lists_presets_and_stain_stats():
    names = ENCODERS.names()
    for name in ("resnet50_trunc", "uni", "uni2", "virchow", "virchow2", "stain_stats"):
        assert name in names
    rows = {r["name"]: r for r in describe_encoders()}
    assert set(rows) == set(names)
    assert rows["resnet50_trunc"]["dim"] == 1024 and rows["virchow2"]["dim"] == 2560


def test_unknown_encoder_is_one_line_with_choices():
    with pytest.raises(ConfigError) as exc:
        create_encoder("unii")
    msg = str(exc.value)
    assert "\n" not in msg and "'unii'" in msg
    assert "uni, uni2" in msg and "stain_stats" in msg and "timm:<architecture>" in msg
    with pytest.raises(ConfigError, match="unknown timm architecture 'no_such_net'"):
        create_encoder("timm:no_such_net", allow_random=True)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_timm_weights_file_round_trip(tmp_path, suffix):
    """A pretrained=False timm model saved to disk gives the same features through the real
    loading path; the classifier in the file is ignored (the encoder is head-less)."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    sd = model.state_dict()
    path = tmp_path / f"r18{suffix}"
    if suffix == ".safetensors":
        save_file(sd, str(path))
    else:  # a training checkpoint: wrapped and DataParallel-prefixed
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    enc = create_encoder("timm:resnet18", weights=path, input_size=64)
    assert enc.dim == 512 and enc.input_size == 64 and enc.weights == str(path)
    assert enc.mean == IMAGENET_MEAN and enc.name == "timm-resnet18"
    x = enc.preprocess(_batch())  # (2, 3, 64, 64)
    with torch.inference_mode():
        got = enc(x)
        want = model.forward_head(model.forward_features(x), pre_logits=True)
    assert got.shape == (2, 512)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)  # channels-last rounding


def test_vit_weights_of_another_size_name_the_keys(tmp_path):
    small = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                              img_size=32)
    path = tmp_path / "vit.safetensors"
    save_file(small.state_dict(), str(path))
    enc = create_encoder("timm:vit_tiny_patch16_224", weights=path, img_size=32)
    assert enc.dim == 192
    with pytest.raises(SrmilError) as exc:
        create_encoder("timm:vit_tiny_patch16_224", weights=path, img_size=64)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    assert "of another shape (pos_embed (1, 5, 192) vs (1, 17, 192))" in msg


def test_weights_of_another_architecture_name_the_keys(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                            img_size=32)
    path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), path)
    with pytest.raises(SrmilError) as exc:
        create_encoder("resnet50_trunc", weights=path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path}: weights do not fit encoder "
                                              "'resnet50_trunc'")
    assert "missing (bn1.bias, bn1.num_batches_tracked" in msg
    assert "unexpected (blocks.0.attn.proj.bias" in msg and "more)" in msg


def test_resnet50_trunc_loads_a_full_resnet50_and_stops_after_layer3(tmp_path):
    torch.manual_seed(1)
    full = timm.create_model("resnet50", pretrained=False).eval()  # with layer4 and fc
    path = tmp_path / "resnet50.safetensors"
    save_file(full.state_dict(), str(path))
    enc = create_encoder("resnet50_trunc", weights=path)
    assert (enc.dim, enc.input_size, enc.mean, enc.std) == (1024, 224, IMAGENET_MEAN,
                                                            IMAGENET_STD)
    x = enc.preprocess(_batch(2, 96))  # resized to 224
    assert x.shape == (2, 3, 224, 224)
    with torch.inference_mode():
        got = enc(x)
        h = full.maxpool(full.act1(full.bn1(full.conv1(x))))
        h = full.layer3(full.layer2(full.layer1(h)))  # (2, 1024, 14, 14)
        want = h.mean((2, 3))
    assert got.shape == (2, 1024) and enc.channels_last
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)  # channels-last rounding


def test_preset_without_weights_says_where_to_put_them(weights_dir):
    with pytest.raises(SrmilError) as exc:
        create_encoder("uni")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "https://huggingface.co/MahmoodLab/UNI" in msg
    assert str(weights_dir / "uni" / "pytorch_model.bin") in msg and "--weights" in msg
    with pytest.raises(SrmilError, match="weights file not found"):
        create_encoder("virchow2", weights=weights_dir / "nope.bin")
    with pytest.raises(SrmilError, match="needs --weights"):
        create_encoder("timm:resnet18")


def test_preset_finds_weights_in_the_weights_dir(weights_dir):
    full = timm.create_model("resnet50", pretrained=False)
    (weights_dir / "resnet50_trunc").mkdir(parents=True)
    path = weights_dir / "resnet50_trunc" / "model.safetensors"
    save_file(full.state_dict(), str(path))
    assert create_encoder("resnet50_trunc").weights == str(path)
    # a downloaded model folder works as --weights too
    assert create_encoder("resnet50_trunc", weights=path.parent).weights == str(path)


def test_resnet50_trunc_random_only_on_request(weights_dir):
    with pytest.raises(SrmilError, match="needs weights"):
        create_encoder("resnet50_trunc")
    enc = create_encoder("resnet50_trunc", allow_random=True)
    assert enc.weights is None
    with torch.inference_mode():
        assert enc(enc.preprocess(_batch(1, 224))).shape == (1, 1024)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a pickled module, not a state dict
    with pytest.raises(SrmilError) as exc:
        create_encoder("timm:resnet18", weights=path)
    assert "weights_only=True" in str(exc.value) and "\n" not in str(exc.value)
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"x")
    with pytest.raises(SrmilError, match="unknown weights file type '.onnx'"):
        create_encoder("timm:resnet18", weights=bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(SrmilError, match="cannot read as safetensors"):
        create_encoder("timm:resnet18", weights=junk)


def test_stain_stats_takes_no_weights(tmp_path):
    with pytest.raises(SrmilError, match="weight-free"):
        create_encoder("stain_stats", weights=tmp_path / "w.pt")


# Published parameter counts (model cards / papers, rounded there; within 1 %): the architecture
# of every preset, built on the meta device (no memory, no weights), must match them and give
# ``dim`` features.
CARD_PARAMS = {
    "uni": 303e6,  # MahmoodLab/UNI: ViT-L/16, 303 M
    "uni2": 681e6,  # MahmoodLab/UNI2-h: ViT-H/14, 681 M
    "virchow": 632e6,  # paige-ai/Virchow: 632 M
    "virchow2": 632e6,  # paige-ai/Virchow2: 632 M
    "gigapath": 1.13e9,  # Prov-GigaPath tile encoder: ViT-g, 1.1 B
    "hoptimus0": 1.13e9,  # H-optimus-0: ViT-g/14, 1.1 B
    "resnet50_trunc": 8.54e6,  # ResNet-50 through layer3 (CLAM's 1024-D encoder); no card
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_architecture_matches_its_card(name, weights_dir):
    preset = PRESETS[name]
    with torch.device("meta"):
        enc = create_encoder(name, allow_random=True)
        y = enc(torch.empty(2, 3, preset.input_size, preset.input_size))
    n = sum(p.numel() for p in enc.parameters())
    assert abs(n - CARD_PARAMS[name]) / CARD_PARAMS[name] < 0.01, n
    assert tuple(y.shape) == (2, preset.dim) == (2, enc.dim)


def test_virchow_pools_class_and_mean_patch_tokens(weights_dir):
    """Virchow2's 2560-D embedding is [class token, mean of the 256 patch tokens]: the 4
    register tokens after the class token are left out."""
    with torch.device("meta"):
        enc = create_encoder("virchow2", allow_random=True)
    tokens = torch.randn(2, 1 + 4 + 256, 1280)
    enc.model.forward = lambda x: tokens  # the pooling alone, on known tokens
    y = enc(torch.zeros(2, 3, 224, 224))
    torch.testing.assert_close(y[:, :1280], tokens[:, 0])
    torch.testing.assert_close(y[:, 1280:], tokens[:, 5:].mean(1))


def test_preprocess_resizes_crops_and_normalises():
    white = np.full((3, 256, 256, 3), 255, np.uint8)
    x = Preprocess(input_size=224, read_size=256)(white)
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32
    want = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x[0, :, 100, 100], want)
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, None, :, None], (1, 256, 256, 3))
    y = Preprocess(input_size=224, read_size=256, mean=None, std=None)(ramp.copy())
    torch.testing.assert_close(y[0, 0, 0, 0], torch.tensor(16 / 255))  # centre crop of 256
    z = Preprocess(input_size=64, read_size=64, mean=None, std=None)(ramp.copy())
    assert z.shape == (1, 3, 64, 64) and 0 <= float(z.min()) and float(z.max()) <= 1


def test_never_loads_pretrained_weights_from_a_hub(monkeypatch, tmp_path):
    import timm.models._builder as builder

    def refuse(*args, **kwargs):
        raise AssertionError("pretrained/hub loading attempted")

    monkeypatch.setattr(builder, "load_pretrained", refuse)
    monkeypatch.setattr(builder, "load_custom_pretrained", refuse)
    path = tmp_path / "r18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(path))
    assert create_encoder("timm:resnet18", weights=path).weights == str(path)
    with torch.device("meta"):
        assert create_encoder("uni", allow_random=True).dim == 1024


def test_building_encoders_never_asks_the_hub(monkeypatch, tmp_path):
    """Offline by construction: ``pretrained=False`` and local files, so no download function
    is called and no connection is opened (both would fail this test), whatever
    ``HF_HUB_OFFLINE`` says."""
    import socket

    import huggingface_hub

    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network access: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, no_network)
        monkeypatch.setattr(huggingface_hub.file_download, name, no_network, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a user's "online" setting changes nothing
    path = tmp_path / "r18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(),
              str(path))
    enc = create_encoder("timm:resnet18", weights=path)
    assert enc.weights == str(path) and enc.dim == 512
    with torch.device("meta"):
        create_encoder("uni", allow_random=True)
        create_encoder("resnet50_trunc", allow_random=True)
    assert calls == []


def test_weights_identity_is_the_sha256_of_the_file(tmp_path):
    import hashlib

    from srmil.features.encoders import weights_sha256

    a, b = tmp_path / "a" / "model.bin", tmp_path / "b" / "model.bin"
    for p, data in ((a, b"\x00" * 1000), (b, b"\x01" * 1000)):  # same name and size
        p.parent.mkdir()
        p.write_bytes(data)
    assert weights_sha256(a) == hashlib.sha256(b"\x00" * 1000).hexdigest()
    assert weights_sha256(b) != weights_sha256(a)
    assert weights_sha256(None) == "none"
    with pytest.raises(SrmilError, match="cannot read weights file"):
        weights_sha256(tmp_path / "none.bin")
