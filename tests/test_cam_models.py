"""The backbone factory, the 4-channel stem, local pretrained weights and the CAM classifier."""

import pytest
import timm
import torch

from hpacam.cam.models import (
    PretrainedWeightsError,
    create_model,
    find_stem_conv,
    parameter_groups,
)
from hpacam.classes import NUM_CLASSES

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}


def tiny(output_stride=8, **kw):
    return create_model("resnet10t", output_stride=output_stride, **TINY, **kw)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_cam_size_follows_output_stride(output_stride):
    model = tiny(output_stride).eval()
    logits, cams = model(torch.rand(2, 4, 64, 64), with_cam=True)
    assert logits.shape == (2, NUM_CLASSES)
    assert cams.shape == (2, NUM_CLASSES, 64 // output_stride, 64 // output_stride)


def test_logits_are_the_mean_of_the_class_maps():
    model = tiny().eval()
    images = torch.rand(3, 4, 64, 64)
    logits, cams = model(images, with_cam=True)
    torch.testing.assert_close(logits, cams.mean(dim=(2, 3)))
    torch.testing.assert_close(model(images), logits, rtol=1e-4, atol=1e-5)
    assert model.classifier.bias is None


@pytest.mark.parametrize("name,output_stride", [("efficientnet-b0", 8), ("efficientnet-b0", 16), ("resnest50", 8)])
def test_every_backbone_family_gives_dilated_maps(name, output_stride):
    model = create_model(name, output_stride=output_stride).eval()
    with torch.no_grad():
        _, cams = model(torch.rand(1, 4, 64, 64), with_cam=True)
    assert cams.shape == (1, NUM_CLASSES, 64 // output_stride, 64 // output_stride)


def test_resnest101_builds_with_an_rgby_stem():
    model = create_model("resnest101", output_stride=16)
    _, stem = find_stem_conv(model.backbone)
    assert stem.in_channels == 4 and stem.weight.shape[1] == 4
    assert model.classifier.in_channels == 2048


def test_yellow_filters_start_as_the_red_ones():
    torch.manual_seed(0)
    rgb = create_model("resnet10t", in_chans=3, **TINY)
    torch.manual_seed(0)
    rgby = create_model("resnet10t", in_chans=4, **TINY)
    w3 = find_stem_conv(rgb.backbone)[1].weight
    w4 = find_stem_conv(rgby.backbone)[1].weight
    torch.testing.assert_close(w4[:, :3], w3, rtol=0, atol=0)
    torch.testing.assert_close(w4[:, 3], w3[:, 0], rtol=0, atol=0)


def test_local_pretrained_file_is_loaded_and_its_stem_widened(tmp_path):
    source = timm.create_model("resnet10t", pretrained=False, num_classes=1000, **TINY)  # with its fc head
    path = tmp_path / "resnet10t_imagenet.pth"
    torch.save(source.state_dict(), path)
    model = tiny(pretrained_path=path)
    loaded = model.backbone.net.state_dict()
    for key, value in source.state_dict().items():
        if key.startswith("fc."):
            continue
        if key == "conv1.0.weight":
            torch.testing.assert_close(loaded[key][:, :3], value, rtol=0, atol=0)
            torch.testing.assert_close(loaded[key][:, 3], value[:, 0], rtol=0, atol=0)
        else:
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


def test_pretrained_file_wrapped_in_a_dict_with_module_prefix(tmp_path):
    source = timm.create_model("resnet10t", pretrained=False, num_classes=0, **TINY)
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = tiny(pretrained_path=path)
    torch.testing.assert_close(model.backbone.net.layer4[0].conv1.weight, source.layer4[0].conv1.weight)


def test_pretrained_file_of_another_architecture_is_refused(tmp_path):
    other = timm.create_model("resnet10t", pretrained=False, channels=(8, 16, 32, 32), stem_width=8)
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="other.pth.*wrong shape"):
        tiny(pretrained_path=path)


def test_missing_or_corrupt_pretrained_file_names_the_file(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="absent.pth: pretrained weights file not found"):
        tiny(pretrained_path=tmp_path / "absent.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="bad.pth: unreadable"):
        tiny(pretrained_path=bad)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="output_stride"):
        tiny(output_stride=4)
    with pytest.raises(ValueError, match="in_chans"):
        tiny(in_chans=2)
    with pytest.raises(ValueError, match="unknown backbone"):
        create_model("resnest77")
    with pytest.raises(ValueError, match="not a timm model"):
        create_model("no_such_model_xyz")
    with pytest.raises(ValueError, match="output_stride"):
        create_model("mobilenetv3_small_050", output_stride=8)


def test_parameter_groups_split_every_parameter_once():
    model = tiny()
    groups = parameter_groups(model)
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    backbone_weights, backbone_biases, new_weights, new_biases = groups
    assert new_weights == [model.classifier.weight] and new_biases == []
    assert backbone_weights and backbone_biases  # batch-norm biases


def test_wrong_number_of_input_channels_is_a_clear_error():
    with pytest.raises(ValueError, match="expected 4 input channels, got 3"):
        tiny()(torch.rand(1, 3, 32, 32))
