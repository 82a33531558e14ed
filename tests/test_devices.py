"""Device choice, on what is installed here: the CPU builds of ONNX Runtime and torch, no GPU."""

import onnxruntime as ort
import torch

from smalldata.backbones import get_backbone
from smalldata.devices import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    device_name,
    onnx_providers,
    torch_device,
)


def test_without_a_gpu_the_cpu_is_chosen_and_said():
    # What this machine has: no CUDA provider in its ONNX Runtime, no CUDA for torch.
    assert CUDA_PROVIDER not in ort.get_available_providers() and not torch.cuda.is_available()
    assert onnx_providers() == [CPU_PROVIDER]
    assert torch_device() == "cpu"
    assert device_name() == device_name(modality_uses_torch=True) == "CPU"


def test_the_image_network_runs_on_the_provider_chosen():
    session = get_backbone("efficientnet-lite0").session()
    assert session.get_providers() == onnx_providers()


def test_cuda_is_put_first_where_the_build_offers_it_and_cpu_can_be_forced(monkeypatch):
    # The rule itself, on provider lists as ONNX Runtime's GPU build reports them (the CPU stays last,
    # for operators CUDA lacks); SMALLDATA_DEVICE=cpu keeps a GPU machine on its CPU.
    offered = ["TensorrtExecutionProvider", CUDA_PROVIDER, CPU_PROVIDER]
    assert onnx_providers(offered) == [CUDA_PROVIDER, CPU_PROVIDER]
    assert onnx_providers([CPU_PROVIDER]) == [CPU_PROVIDER]
    monkeypatch.setenv("SMALLDATA_DEVICE", "cpu")
    assert onnx_providers(offered) == [CPU_PROVIDER]


def test_torch_takes_a_usable_gpu_and_smalldata_device_cpu_keeps_it_on_the_cpu(monkeypatch):
    # Asked afresh each time: the environment variable counts whenever it is set.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_device() == "cuda"
    monkeypatch.setenv("SMALLDATA_DEVICE", "cpu")
    assert torch_device() == "cpu" and device_name(modality_uses_torch=True) == "CPU"
