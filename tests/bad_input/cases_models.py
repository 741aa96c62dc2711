"""Backbones, the adapter and its normalisation."""

import torch
from torch import nn

from pyrobust.models import FeatureModel, Normalize, efficientnet_lite0, get_backbone, small_resnet
from tests.bad_input.fixtures import tiny_model
from tests.bad_input.harness import bad, table

V, T = ValueError, TypeError
BACKBONE = nn.Sequential(nn.Flatten(), nn.Linear(48, 6))

CASES = table(
    bad("normalize NaN std", lambda: Normalize((0.5, 0.5, 0.5), (float("nan"), 1, 1)), V, r"std .*nan"),
    bad("normalize inf mean", lambda: Normalize((float("inf"), 0.5, 0.5), (1, 1, 1)), V, r"mean .*inf"),
    bad("normalize zero std", lambda: Normalize((0.5,), (0.0,)), V, r"std > 0"),
    bad("normalize lengths", lambda: Normalize((0.5, 0.5), (1, 1, 1)), V, r"same length"),
    bad("normalize empty", lambda: Normalize((), ()), V, r"mean"),
    bad("normalize strings", lambda: Normalize(("a",), (1,)), (V, T), r"mean"),
    bad("feature model num_classes 0", lambda: FeatureModel(BACKBONE, 6, 0), V, r"num_classes .*0"),
    bad("feature model num_classes bool", lambda: FeatureModel(BACKBONE, 6, True), V, r"num_classes"),
    bad("feature model feature_dim 0", lambda: FeatureModel(BACKBONE, 0, 3), V, r"feature_dim .*0"),
    bad("feature model feature_dim string", lambda: FeatureModel(BACKBONE, "6", 3), T, r"feature_dim .*'6'"),
    bad("feature model backbone", lambda: FeatureModel("resnet", 6, 3), T, r"backbone .*str"),
    bad("feature model head", lambda: FeatureModel(BACKBONE, 6, 3, head=nn.Linear(5, 3)), V, r"in_features=6"),
    bad("reset_head zero", lambda: tiny_model().reset_head(0), V, r"num_classes .*0"),
    bad("from_module layer", lambda: FeatureModel.from_module(BACKBONE, "nope", 3), V, r"'nope' is not a sub-module"),
    bad("from_module empty layer", lambda: FeatureModel.from_module(BACKBONE, "", 3), V, r"feature_layer ''"),
    bad("from_module input shape", lambda: FeatureModel.from_module(BACKBONE, "1", 3, input_shape=(3, -1, 4)), V,
        r"input_shape .*-1"),
    bad("from_classifier no linear", lambda: FeatureModel.from_classifier(nn.Conv2d(3, 3, 1), 3), V, r"no nn.Linear"),
    bad("backbone unknown", lambda: get_backbone("vit_giant"), V, r"unknown backbone 'vit_giant'"),
    bad("backbone name int", lambda: get_backbone(3), T, r"backbone name"),
    bad("backbone num_classes", lambda: get_backbone("small_resnet", num_classes=-1), V, r"num_classes .*-1"),
    bad("backbone torchvision unknown", lambda: get_backbone("torchvision:nope"), V, r"torchvision:nope"),
    bad("backbone extra kwargs", lambda: get_backbone("resnet18", width=3), T, r"width"),
    bad("small_resnet width", lambda: small_resnet(3, width=0), V, r"width .*0"),
    bad("small_resnet stem_stride", lambda: small_resnet(3, stem_stride=2.0), V, r"stem_stride"),
    bad("lite0 image_size", lambda: efficientnet_lite0(3, 4, pretrained=False), V, r"image_size .*4"),
    bad("lite0 drop_connect_rate", lambda: efficientnet_lite0(3, 64, pretrained=False, drop_connect_rate=1.5), V,
        r"drop_connect_rate .*1.5"),
    bad("lite0 weights missing", lambda: efficientnet_lite0(3, 64, weights_path="/nonexistent/w.pth"), V,
        r"/nonexistent/w.pth"),
    bad("lite0 imagenet head", lambda: efficientnet_lite0(10, 64, imagenet_head=True), V, r"imagenet_head"),
)
