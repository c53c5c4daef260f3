"""Feature extraction: batches through the model in eval mode, optional flip averaging."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from keyreid.data.loader import ImageDataset
from keyreid.data.records import Sample
from keyreid.data.transforms import KeypointTransform
from keyreid.utils.progress import progress_bar


@torch.no_grad()
def extract_features(model: torch.nn.Module, samples: Sequence[Sample], transform: KeypointTransform,
                     batch_size: int = 128, workers: int = 0, device: str | torch.device = "cpu",
                     flip: bool = False, feature: str = "embedding", show_progress: bool = False,
                     description: str = "features") -> np.ndarray:
    """float32 [N, D]: `feature` ("embedding", post-BN, or "feature", pre-BN) of every sample;
    with flip, the mean of the image's and its mirror's features (BoT's flip test)."""
    model.eval()
    loader = DataLoader(ImageDataset(samples, transform), batch_size=batch_size, shuffle=False,
                        num_workers=workers)
    chunks = []
    with progress_bar(show_progress) as bar:
        task = bar.add_task(description, total=len(samples))
        for batch in loader:
            x = batch["image"].to(device)
            f = getattr(model(x), feature)
            if flip:
                f = (f + getattr(model(torch.flip(x, dims=[3])), feature)) / 2
            chunks.append(f.float().cpu().numpy())
            bar.advance(task, len(x))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
