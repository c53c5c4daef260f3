"""Loading a trained model and embedding images: one path for every consumer."""

from keyreid.inference.device import resolve_device
from keyreid.inference.embed import extract_features
from keyreid.inference.loaded import RUNTIMES, LoadedModel, card_for, load_model, model_format, runtime_of

__all__ = ["RUNTIMES", "LoadedModel", "runtime_of", "card_for", "extract_features", "load_model", "model_format", "resolve_device"]
