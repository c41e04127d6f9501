"""``import srmil`` re-exports the public API lazily: names resolve, nothing heavy on import."""

from __future__ import annotations

import subprocess
import sys

import srmil

NEW = ("open_slide", "create_encoder", "extract_slide", "ENCODERS", "SLIDE_READERS", "MODELS",
       "create_model", "heatmap_run")


def test_the_public_api_is_reexported_lazily():
    code = ("import sys, srmil; "
            "names = " + repr(NEW) + "; "
            "assert set(names) <= set(srmil.__all__) and set(names) <= set(dir(srmil)); "
            "heavy = {'torch', 'timm', 'openslide', 'matplotlib', 'h5py'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_reexported_names_are_the_real_objects():
    from srmil.features.encoders import ENCODERS, create_encoder
    from srmil.features.extract import extract_slide
    from srmil.models.base import MODELS, create_model
    from srmil.reports.slide_heatmaps import heatmap_run
    from srmil.slides.readers import SLIDE_READERS, open_slide

    assert srmil.open_slide is open_slide and srmil.SLIDE_READERS is SLIDE_READERS
    assert srmil.create_encoder is create_encoder and srmil.ENCODERS is ENCODERS
    assert srmil.extract_slide is extract_slide and srmil.heatmap_run is heatmap_run
    assert srmil.create_model is create_model and srmil.MODELS is MODELS
    assert "openslide" in srmil.SLIDE_READERS and "abmil" in srmil.MODELS  # registries filled
