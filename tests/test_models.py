"""Generic head finding and checkpoint loading across torchvision families."""

import pytest
import torch
from safetensors.torch import save_file

from nero.model.classifier import (
    CheckpointError,
    build_model,
    capture_head_input,
    find_head,
    load_classifier,
)

ARCHS = {  # arch → (input size, feature width D)
    "resnet18": (32, 512),
    "densenet121": (32, 1024),
    "vgg11_bn": (32, 4096),
    "efficientnet_b0": (32, 1280),
    "mobilenet_v3_small": (32, 1024),
    "convnext_tiny": (32, 768),
    "vit_b_16": (32, 768),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_head_found_and_captured(arch):
    size, width = ARCHS[arch]
    torch.manual_seed(0)
    model = build_model(arch, 5, size).eval()
    name, head = find_head(model, size)
    assert head.out_features == 5 and head.in_features == width
    x = torch.randn(2, 3, size, size)
    with capture_head_input(head) as store, torch.no_grad():
        logits = model(x)
    assert store["features"].shape == (2, width)
    # the captured input reproduces the logits through the head alone
    torch.testing.assert_close(head(store["features"]), logits)
    assert not head._forward_pre_hooks  # hook removed on exit
    assert name


@pytest.fixture(scope="module")
def resnet_state():
    torch.manual_seed(0)
    return build_model("resnet18", 3, 32).state_dict()


def test_load_state_dict_formats(tmp_path, resnet_state):
    torch.save(resnet_state, tmp_path / "a.pt")
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in resnet_state.items()}}, tmp_path / "b.pth"
    )
    save_file(resnet_state, str(tmp_path / "c.safetensors"))
    for name in ("a.pt", "b.pth", "c.safetensors"):
        loaded = load_classifier("resnet18", tmp_path / name, img_size=32)
        assert loaded.num_classes == 3  # read from the head's shape
        assert len(loaded.checkpoint_sha256) == 64
        torch.testing.assert_close(loaded.model.fc.weight, resnet_state["fc.weight"])


def test_class_count_mismatch_is_named(tmp_path, resnet_state):
    torch.save(resnet_state, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="3-class head but the data has 4 classes"):
        load_classifier("resnet18", tmp_path / "m.pt", num_classes=4, img_size=32)


def test_wrong_architecture_is_named(tmp_path, resnet_state):
    torch.save(resnet_state, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of this architecture|match"):
        load_classifier("densenet121", tmp_path / "m.pt", img_size=32)
    with pytest.raises(CheckpointError, match="does not match architecture 'resnet34'"):
        load_classifier("resnet34", tmp_path / "m.pt", img_size=32)


def test_pickled_model_needs_trust(tmp_path):
    model = build_model("resnet18", 2, 32)
    torch.save(model, tmp_path / "full.pt")
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        load_classifier("resnet18", tmp_path / "full.pt", img_size=32)
    loaded = load_classifier("resnet18", tmp_path / "full.pt", img_size=32, trust_pickle=True)
    assert loaded.num_classes == 2


def test_garbage_and_missing_checkpoints(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_classifier("resnet18", tmp_path / "junk.pt", img_size=32)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_classifier("resnet18", tmp_path / "nope.pt", img_size=32)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet_nope", 3)


def test_timm_deit_small_from_a_local_checkpoint(tmp_path):
    pytest.importorskip("timm")  # the optional extra: pip install .[timm]
    torch.manual_seed(0)
    model = build_model("timm/deit_small_patch16_224", 3, 32)
    torch.save(model.state_dict(), tmp_path / "deit.pt")
    loaded = load_classifier("timm/deit_small_patch16_224", tmp_path / "deit.pt", img_size=32)
    assert loaded.num_classes == 3 and loaded.head_name == "head"
    assert loaded.head.in_features == 384  # DeiT-S width: the class token after the final norm
    with pytest.raises(ValueError, match="timm has no architecture"):
        build_model("timm/not_a_model", 3, 32)
