"""pyrobust.models: the FeatureModel adapter, EfficientNet-Lite0 on real photos, the small ResNet, the registry."""

import numpy as np
import pytest
import torch
from torch import nn

from pyrobust.models import (
    IMAGENET_MEAN_STD,
    TFLITE_MEAN_STD,
    FeatureModel,
    Normalize,
    efficientnet_lite0,
    get_backbone,
    small_resnet,
)


class TinyNet(nn.Module):
    """conv → relu → conv (the feature map) → pool → fc, small enough to check by hand."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)
        self.calls = []

    def forward(self, x):
        self.calls.append("forward")
        y = self.conv2(self.relu(self.conv1(x)))
        self.calls.append("after conv2")
        return self.fc(self.pool(y).flatten(1))


def test_from_module_pools_the_named_layer():
    torch.manual_seed(0)
    net = TinyNet()
    norm = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    m = FeatureModel.from_module(net, "conv2", num_classes=3, normalize=norm, input_shape=(3, 10, 10))
    assert m.feature_dim == 6 and m.num_classes == 3 and isinstance(m.head, nn.Linear)
    x = torch.rand(2, 3, 10, 10)
    f = m.features(x)
    ref = net.conv2(net.relu(net.conv1((x - 0.5) / 0.25))).mean((2, 3))
    torch.testing.assert_close(f, ref)
    torch.testing.assert_close(m(x), m.head(ref))
    net.calls.clear()
    m.features(x)
    assert net.calls == ["forward"]  # the forward stops at the feature layer; fc never runs
    # 2-D layer outputs are used as they are; the logits layer is a valid "feature" too
    m2 = FeatureModel.from_module(net, "fc", num_classes=2, input_shape=(3, 10, 10))
    torch.testing.assert_close(m2.features(x), net(x))


def test_gradients_flow_through_features():
    torch.manual_seed(0)
    m = FeatureModel.from_module(TinyNet(), "conv2", num_classes=3, input_shape=(3, 8, 8))
    m(torch.rand(2, 3, 8, 8)).sum().backward()
    assert m.backbone.module.conv1.weight.grad is not None
    assert m.backbone.module.fc.weight.grad is None


def test_head_replacement():
    torch.manual_seed(0)
    m = FeatureModel.from_module(TinyNet(), "conv2", num_classes=3, input_shape=(3, 8, 8))
    x = torch.rand(4, 3, 8, 8)
    f = m.features(x)
    new = m.reset_head(7)
    assert m.head is new and m.num_classes == 7 and m(x).shape == (4, 7)
    lin = nn.Linear(6, 2)
    m.head = lin
    torch.testing.assert_close(m(x), lin(f))
    with pytest.raises(ValueError, match="in_features=6"):
        FeatureModel(m.backbone, 6, 3, head=nn.Linear(5, 3))


def test_adapter_errors():
    with pytest.raises(ValueError, match="'conv9' is not a sub-module"):
        FeatureModel.from_module(TinyNet(), "conv9", 3)
    with pytest.raises(ValueError, match="num_classes"):
        FeatureModel(nn.Flatten(), 4, 0)

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Conv2d(3, 4, 2, 2)
            self.tok = nn.Flatten(2)  # (N, C, L): neither a vector nor a map

        def forward(self, x):
            return self.tok(self.emb(x))

    with pytest.raises(ValueError, match=r"expected \(N, D\) or \(N, C, H, W\)"):
        FeatureModel.from_module(Tokens(), "tok", 2, input_shape=(3, 4, 4))


def test_from_classifier_torchvision_resnet():
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=11).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        pooled = torch.flatten(net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(
            net.maxpool(net.relu(net.bn1(net.conv1(x))))))))), 1)
    m = FeatureModel.from_classifier(net, 4).eval()
    assert m.feature_dim == 512 and isinstance(net.fc, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(m.features(x), pooled)


def test_small_resnet():
    torch.manual_seed(0)
    m = small_resnet(10, in_channels=1, width=8)
    x = torch.rand(5, 1, 28, 28)
    assert m.features(x).shape == (5, 32) and m(x).shape == (5, 10)
    assert m.backbone.layer3(m.backbone.layer2(m.backbone.layer1(m.backbone.stem(x)))).shape == (5, 32, 4, 4)
    # zero-initialised last BN: every block starts as relu(x + shortcut(x)), the identity on relu outputs
    blk = m.backbone.layer1
    z = torch.relu(torch.randn(2, 8, 7, 7))
    torch.testing.assert_close(blk(z), z)
    # it can learn: a few steps on a fixed batch reduce the loss
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    y = torch.arange(5)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_get_backbone_names():
    assert get_backbone("small_resnet", 3).num_classes == 3
    m = get_backbone("torchvision:mobilenet_v3_small", 4)
    assert m.feature_dim == 1024 and isinstance(m.normalize, Normalize)
    with pytest.raises(ValueError, match="unknown backbone 'vgg99'.*efficientnet_lite0.*small_resnet"):
        get_backbone("vgg99")
    with pytest.raises(ValueError, match="unknown backbone 'torchvision:nope'"):
        get_backbone("torchvision:nope")


# --------------------------------------------------------------------------- EfficientNet-Lite0, real photos
def _photo(name: str, size: int = 224) -> torch.Tensor:
    """scikit-learn's bundled sample photo, shorter side resized to ``size``, centre-cropped, [0, 1]."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    im = Image.fromarray(load_sample_image(name))
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    a = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255
    return torch.from_numpy(a.copy()).permute(2, 0, 1)


@pytest.fixture(scope="module")
def lite0_imagenet():
    torch.manual_seed(0)
    return efficientnet_lite0(1000, 224, imagenet_head=True).eval()


@pytest.fixture(scope="module")
def photos():
    return torch.stack([_photo("china.jpg"), _photo("flower.jpg")])


def test_efficientnet_lite0_imagenet_predictions(lite0_imagenet, photos):
    assert lite0_imagenet.feature_dim == 1280
    with torch.no_grad():
        feats = lite0_imagenet.features(photos)
        logits = lite0_imagenet.head(feats)
    assert feats.shape == (2, 1280)
    top5 = logits.topk(5, dim=1).indices.tolist()
    # Expected classes found by running the model with TF-Lite normalisation and reading the ImageNet
    # class list (torchvision's weight metadata); both are the top-1 prediction:
    #   china.jpg (a Chinese temple / palace roof): 698 "palace"
    #   flower.jpg (a white-petalled flower): 985 "daisy"
    assert 698 in top5[0], top5
    assert 985 in top5[1], top5


def test_efficientnet_lite0_normalisation_matches_stem_bn_statistics(lite0_imagenet, photos):
    net = lite0_imagenet.backbone.net
    bn = net._bn0
    expected_std = (bn.running_var + bn.eps).sqrt()
    expected_rms = (bn.running_mean**2 + expected_std**2).sqrt()

    def stem_rms_ratio(mean, std):
        x = Normalize(mean, std)(photos)
        with torch.no_grad():
            s = net._conv_stem(x)
        rms = s.pow(2).mean((0, 2, 3)).sqrt()  # per-channel second moment of the stem output
        return float((rms / expected_rms).median())

    tflite = stem_rms_ratio(*TFLITE_MEAN_STD)
    imagenet = stem_rms_ratio(*IMAGENET_MEAN_STD)
    # The TF-Lite convention reproduces the statistics the BN layer was trained on; ImageNet
    # mean/std divides by std ≈ 0.226 instead of 128/255 ≈ 0.502, ≈ 2.2× larger (REFERENCES.md §4).
    assert 0.8 < tflite < 1.25, tflite
    assert 1.8 < imagenet < 2.7, imagenet
    assert imagenet / tflite > 1.8
    assert isinstance(lite0_imagenet.normalize, Normalize)
    torch.testing.assert_close(lite0_imagenet.normalize(photos), (photos * 255 - 127.5) / 128)


def test_efficientnet_lite0_small_input_and_local_weights(tmp_path):
    m = efficientnet_lite0(10, 64)
    assert m.features(torch.rand(2, 3, 64, 64)).shape == (2, 1280) and m.num_classes == 10
    ref = torch.load(_weights(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(m.backbone.net._conv_stem.weight, ref["_conv_stem.weight"])
    with pytest.raises(ValueError, match="does not exist"):
        efficientnet_lite0(10, 64, weights_path=tmp_path / "none.pth")
    with pytest.raises(ValueError, match="imagenet_head"):
        efficientnet_lite0(10, 64, imagenet_head=True)
    with pytest.raises(ValueError, match="image_size"):
        efficientnet_lite0(10, 4)


def _weights():
    from pyrobust.models import efficientnet_lite0_weights_path

    return efficientnet_lite0_weights_path()
