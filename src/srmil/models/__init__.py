"""MIL models; importing this package registers every model in ``MODELS``."""

from srmil.models import (  # noqa: F401  (registers)
    abmil,
    clam,
    dsmil,
    dtfd,
    mean,
    patchgcn,
    srmil,
    transmil,
)
from srmil.models.base import MODELS, MILModel, create_model

__all__ = ["MODELS", "MILModel", "create_model"]
