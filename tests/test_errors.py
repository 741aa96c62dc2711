"""The usage checks the commands and the library share: the device and the output folder."""

import os

import pytest
import torch
from torch import nn

from pyrobust.errors import UsageError, check_out_folder, resolve_device
from tests.conftest import needs_cuda


def test_resolve_device_returns_a_torch_device():
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == auto and resolve_device(None) == auto
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert all(isinstance(resolve_device(d), torch.device) for d in ("auto", None, "cpu", torch.device("cpu")))
    assert str(resolve_device("cpu")) == "cpu"  # what results files record


def test_resolve_device_follows_a_model_only_when_asked_for_auto():
    model = nn.Linear(2, 2)
    assert resolve_device(None, model) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu", model) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "", "tpu:0"])
def test_resolve_device_refuses_what_is_not_a_device(bad):
    with pytest.raises(UsageError, match="device must be auto, cpu, cuda or cuda:N"):
        resolve_device(bad)
    assert issubclass(UsageError, ValueError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_resolve_device_refuses_cuda_without_cuda():
    for d in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(UsageError, match="no CUDA device is available"):
            resolve_device(d)


@needs_cuda
def test_resolve_device_on_cuda():
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    model = nn.Linear(2, 2).to("cuda")
    assert resolve_device(None, model) == next(model.parameters()).device
    with pytest.raises(UsageError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_check_out_folder(tmp_path):
    assert check_out_folder(str(tmp_path / "new" / "deeper")) == str(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # checked, not created
    rel = os.path.relpath(tmp_path / "x")
    assert check_out_folder(rel) == os.path.abspath(rel)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        check_out_folder(str(f))
    with pytest.raises(UsageError, match="cannot be created"):
        check_out_folder(str(f / "sub"))
