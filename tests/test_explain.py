"""Grad-CAM against its closed form on a linear model, and the hard/soft pasted patch against its definition."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyrobust.explain import box_masks, cam_mass_in_box, grad_cam, paste_patch, random_boxes, soft_box_weights


def linear_cam_model(weight: torch.Tensor, stride: int = 1) -> nn.Module:
    """A(x) = x (stride 1) or x subsampled by a fixed 1x1 conv; global average pool; linear head ``weight``."""
    k = weight.shape[1]
    feat = nn.Conv2d(k, k, 1, stride=stride, bias=False)
    with torch.no_grad():
        feat.weight.copy_(torch.eye(k).view(k, k, 1, 1))
    head = nn.Linear(k, weight.shape[0], bias=True)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.uniform_(-1, 1)  # a bias shifts scores but not their gradients
    return nn.Sequential(feat, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), head)


def test_grad_cam_hand_computed_case():
    # A has two 2x2 maps; class 0 scores mean(A0) - mean(A1), so alpha = (1/4, -1/4) and
    # CAM = ReLU((A0 - A1) / 4) = ReLU([[-0.75, -0.25], [0.25, 0.75]]).
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 3.0], [2.0, 1.0]]]])
    model = linear_cam_model(torch.tensor([[1.0, -1.0], [0.5, 0.5]]))
    cam = grad_cam(model, a, model[0], classes=0, normalize=False)
    torch.testing.assert_close(cam, torch.tensor([[[0.0, 0.0], [0.25, 0.75]]]))
    cam_n = grad_cam(model, a, "0", classes=[0], normalize=True)
    torch.testing.assert_close(cam_n, torch.tensor([[[0.0, 0.0], [1 / 3, 1.0]]]))


@pytest.mark.parametrize("stride", [1, 2])
def test_grad_cam_equals_class_activation_map(stride):
    # Linear head after global average pooling: Grad-CAM = ReLU(sum_k W[c, k] A_k / (h w)), upsampled.
    torch.manual_seed(0)
    n, k, classes, size = 5, 4, 3, 8
    weight = torch.randn(classes, k)
    model = linear_cam_model(weight, stride)
    x = torch.randn(n, k, size, size)
    cls = torch.tensor([0, 1, 2, 1, 0])
    a = x[:, :, ::stride, ::stride]
    h, w = a.shape[-2:]
    expected = F.relu(torch.einsum("nk,nkhw->nhw", weight[cls], a) / (h * w))
    expected = F.interpolate(expected[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    got = grad_cam(model, x, model[0], cls, normalize=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    normed = grad_cam(model, x, model[0], cls)
    peak = expected.flatten(1).amax(1)
    live = peak > 0
    torch.testing.assert_close(normed[live], expected[live] / peak[live, None, None], rtol=1e-5, atol=1e-6)
    assert float(normed.min()) >= 0.0 and float(normed.max()) <= 1.0 + 1e-6


def test_grad_cam_defaults_to_predicted_class_and_leaves_model_alone():
    torch.manual_seed(1)
    model = linear_cam_model(torch.randn(3, 2))
    model.train()
    x = torch.randn(4, 2, 3, 3)
    pred = model(x).argmax(1)
    torch.testing.assert_close(grad_cam(model, x, "0"), grad_cam(model, x, model[0], pred))
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_grad_cam_bad_arguments():
    model = linear_cam_model(torch.eye(2))
    x = torch.rand(2, 2, 4, 4)
    with pytest.raises(ValueError, match="not a sub-module"):
        grad_cam(model, x, "nope")
    with pytest.raises(ValueError, match="not a sub-module"):
        grad_cam(model, x, nn.Conv2d(2, 2, 1))
    with pytest.raises(ValueError, match="Grad-CAM needs"):
        grad_cam(model, x, "2")  # Flatten's output is 2-D
    with pytest.raises(ValueError, match=r"classes should be in \[0, 2\)"):
        grad_cam(model, x, "0", classes=5)
    with pytest.raises(ValueError, match="floating"):
        grad_cam(model, torch.zeros(2, 2, 4, 4, dtype=torch.long), "0")


def test_hard_paste_patch_copies_the_donor_box():
    torch.manual_seed(2)
    images, donors = torch.rand(3, 2, 10, 12), torch.rand(3, 2, 10, 12)
    boxes = torch.tensor([[0, 0, 4, 4], [2, 3, 7, 12], [5, 6, 10, 9]])
    out, mask = paste_patch(images, donors, boxes)
    assert mask.dtype == torch.bool and mask.shape == (3, 10, 12)
    for i, (t, l, b, r) in enumerate(boxes.tolist()):
        expected_mask = torch.zeros(10, 12, dtype=torch.bool)
        expected_mask[t:b, l:r] = True
        assert torch.equal(mask[i], expected_mask)
        assert torch.equal(out[i][:, expected_mask], donors[i][:, expected_mask])
        assert torch.equal(out[i][:, ~expected_mask], images[i][:, ~expected_mask])
    # one box for every image
    out1, mask1 = paste_patch(images, donors, (2, 3, 7, 12))
    assert torch.equal(out1[1], out[1]) and bool(mask1.all(0).sum() == 5 * 9)


def test_soft_paste_patch_blends_through_a_linear_edge():
    images, donors = torch.zeros(1, 1, 20, 20), torch.ones(1, 1, 20, 20)
    out, mask = paste_patch(images, donors, (5, 5, 15, 15), soft=True, edge=4)
    # Along a row through the middle: weight = clamp(0.5 - d / 4, 0, 1) at pixel centre x + 0.5, d the
    # signed distance to the border at 5 (negative inside): x = 2..7 -> 0, 0.125, 0.375, 0.625, 0.875, 1.
    row = out[0, 0, 10]
    torch.testing.assert_close(row[2:8], torch.tensor([0.0, 0.125, 0.375, 0.625, 0.875, 1.0]))
    torch.testing.assert_close(row, row.flip(0))  # symmetric box in a symmetric image
    torch.testing.assert_close(out[0, 0], torch.outer(row, row))  # product of two 1-D trapezoids
    # a ramp centred on the border keeps the hard box's area exactly
    assert math.isclose(float(out.sum()), 100.0, rel_tol=1e-6)
    assert int(mask.sum()) == 100  # the mask is the hard box in both modes
    # general images: out = G * donor + (1 - G) * image with G the documented window
    torch.manual_seed(3)
    x, d = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    boxes = random_boxes(2, 16, 16, 0.5, generator=torch.Generator().manual_seed(0))
    g = soft_box_weights(boxes, 16, 16, 0.2)[:, None]
    got, _ = paste_patch(x, d, boxes, soft=True, edge=0.2)
    torch.testing.assert_close(got, g * d + (1 - g) * x)


def test_paste_patch_keeps_its_former_name():
    from pyrobust import explain

    assert explain.patch_probe is paste_patch and "patch_probe" in explain.__all__


def test_random_boxes_fit_and_have_the_requested_side():
    boxes = random_boxes(200, 28, 30, 0.5, generator=torch.Generator().manual_seed(0))
    assert boxes.dtype == torch.int64 and boxes.shape == (200, 4)
    assert bool(((boxes[:, 2] - boxes[:, 0]) == 14).all() and ((boxes[:, 3] - boxes[:, 1]) == 14).all())
    assert int(boxes[:, 0].min()) >= 0 and int(boxes[:, 2].max()) <= 28 and int(boxes[:, 3].max()) <= 30
    assert len({tuple(b) for b in boxes.tolist()}) > 50  # positions vary
    with pytest.raises(ValueError, match="does not fit"):
        random_boxes(1, 8, 8, 9)
    with pytest.raises(ValueError, match="leaves"):
        box_masks(torch.tensor([[0, 0, 9, 4]]), 8, 8)


def test_cam_mass_in_box():
    mask = box_masks(torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2]]), 4, 4)
    cams = torch.zeros(3, 4, 4)
    cams[0] = 1.0  # uniform: the box's area fraction
    cams[1, 1, 1] = 3.0  # all mass inside
    cams[2, 3, 3] = 1.0  # all mass outside
    torch.testing.assert_close(cam_mass_in_box(cams, mask), torch.tensor([0.25, 1.0, 0.0]))
    assert math.isnan(float(cam_mass_in_box(torch.zeros(1, 4, 4), mask[:1])[0]))
