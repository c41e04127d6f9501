"""Patch features: encoders (one registry, local weights only) and per-slide extraction."""

from srmil.features.encoders import ENCODERS, Encoder, create_encoder
from srmil.features.extract import extract_slide

__all__ = ["ENCODERS", "Encoder", "create_encoder", "extract_slide"]
