"""What runs a preprocessed batch: one small backend per runtime behind LoadedModel.

A backend gets float32 [B, 3, H, W] images, already resized and normalised by LoadedModel (the
one preprocessing path), and returns the model's raw embedding [B, D] as a torch tensor (before
any L2 normalisation: flip averaging and normalisation happen in LoadedModel, the same for every
runtime). That is all a new runtime (onnxruntime, OpenVINO) has to provide. A backend that holds the
torch module also gives its full output (heatmaps, part features) and the module itself, for
keypoints and gradients; the others say they cannot."""

from __future__ import annotations

from typing import Optional

import threading

import numpy as np
import torch

from keyreid.errors import KeyreidError
from keyreid.inference.onnx_model import INPUT_NAME, RAW_OUTPUT_NAME


class Unsupported(KeyreidError, AttributeError):
    """This runtime cannot do that (an ONNX export has no torch module, no heatmaps, no
    gradients). An AttributeError too, so `hasattr(model, "forward")` asks the question."""


class Backend:
    """The interface: `name`, `device`, `run(batch) -> raw embeddings`; optionally `module` and
    `forward(batch) -> ModelOutput`."""

    name = "?"
    device = torch.device("cpu")
    module: Optional[torch.nn.Module] = None   # the torch model, where this runtime has one

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """[B, D] raw embeddings (any device) of a preprocessed [B, 3, H, W] float32 batch."""
        raise NotImplementedError

    def forward(self, batch: torch.Tensor):
        """The full ModelOutput (embedding, feature, heatmaps, ...) of a preprocessed batch."""
        raise Unsupported(f"the {self.name} backend gives embeddings only (no heatmaps or other "
                          "outputs): load the torch checkpoint (.pt) for those")


class TorchBackend(Backend):
    """The trained torch module, on `device`."""

    name = "torch"

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.module = module.eval()
        self.device = device

    @torch.no_grad()
    def run(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch.to(self.device)).embedding

    @torch.no_grad()
    def forward(self, batch: torch.Tensor):
        return self.module(batch.to(self.device))


class OnnxBackend(Backend):
    """An exported graph run by onnxruntime on CPU; its `raw_embedding` output."""

    name = "onnx"

    def __init__(self, session):
        self.session = session

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        out = self.session.run([RAW_OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return torch.from_numpy(out)


class OpenVinoBackend(Backend):
    """An OpenVINO IR compiled for the CPU (keyreid.inference.openvino_model); its
    `raw_embedding` output. One infer request, used under a lock: a request is not safe to share
    between threads, and keyreid batches images itself, so one at a time loses nothing."""

    name = "openvino"

    def __init__(self, compiled):
        self.compiled = compiled
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        with self._lock:
            self._request.infer({INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
            out = np.array(self._request.get_tensor(RAW_OUTPUT_NAME).data, copy=True)
        return torch.from_numpy(out)


__all__ = ["Backend", "OnnxBackend", "OpenVinoBackend", "TorchBackend", "Unsupported"]
