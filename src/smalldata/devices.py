"""Which device runs the networks: a CUDA GPU when one is usable, else the CPU (the default, and all
that CI or a laptop needs).

Each answer asks the installed libraries, nothing else: ONNX Runtime's CUDA provider exists only in
its GPU build (`onnxruntime-gpu`), torch's CUDA only in a CUDA wheel with a driver and a card
present. With the CPU builds this project pins, both answer "cpu".
"""

from __future__ import annotations

import os

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
# SMALLDATA_DEVICE=cpu keeps the networks on the CPU where a GPU would be picked (to compare the two,
# or to leave the card to another job).
FORCE_ENV = "SMALLDATA_DEVICE"


def _cpu_forced() -> bool:
    return os.environ.get(FORCE_ENV, "").lower() == "cpu"


def onnx_providers(available: list[str] | None = None) -> list[str]:
    """ONNX Runtime's execution providers, best first: CUDA when this build has it, the CPU always
    last (ONNX Runtime falls back to it for any operator CUDA lacks). `available`: the providers to
    choose from (default: `onnxruntime.get_available_providers()`)."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if CUDA_PROVIDER in available and not _cpu_forced():
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def torch_device() -> str:
    """"cuda" when torch can use a GPU here, else "cpu". Asked afresh each time (torch keeps the
    device count once found), so SMALLDATA_DEVICE set by a caller after import still counts."""
    if _cpu_forced():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(modality_uses_torch: bool = False) -> str:
    """What runs the networks, in words for the output: "CPU", or "GPU (NVIDIA H100 80GB HBM3)".
    `modality_uses_torch`: answer for torch (text encoders) rather than ONNX Runtime (image networks)."""
    if modality_uses_torch:
        if torch_device() == "cpu":
            return "CPU"
        import torch

        return f"GPU ({torch.cuda.get_device_name(0)})"
    if onnx_providers()[0] == CPU_PROVIDER:
        return "CPU"
    return "GPU (ONNX Runtime's CUDA provider)"


def synchronize() -> None:
    """Wait for the GPU's queued work (kernels run asynchronously: a timer read before they finish
    measures only the launch); nothing to wait for on the CPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
