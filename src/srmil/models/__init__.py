"""MIL models; importing this package registers every model in ``MODELS``."""

from srmil.models import abmil, mean, srmil  # noqa: F401  (registers)
from srmil.models.base import MODELS, MILModel, create_model

__all__ = ["MODELS", "MILModel", "create_model"]
