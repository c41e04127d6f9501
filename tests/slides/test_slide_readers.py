import numpy as np
import pytest

from srmil.errors import SrmilError
from srmil.slides.readers import (
    SLIDE_READERS,
    find_slides,
    magnification_from_mpp,
    open_slide,
    read_mpp_overrides,
    read_slide_list,
    slide_id_of,
)


def test_real_svs_opens_with_its_pixel_size(svs_path):
    with open_slide(svs_path) as s:
        assert s.slide_id == "cmu_small_region"
        assert s.dimensions == (2220, 2967)
        assert s.level_count == 1 and s.level_downsamples == (1.0,)
        assert s.mpp == pytest.approx(0.499)
        assert s.mpp_source == "mpp"
        assert s.magnification == 20
        region = s.read_region((1000, 1500), 0, (64, 32))
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8
        assert region.std() > 5  # real tissue, not a flat fill
        thumb, ds = s.thumbnail(500)
        assert max(thumb.shape[:2]) == 500 and ds == pytest.approx(2967 / 500, rel=0.01)
    assert "openslide" in SLIDE_READERS


def test_outside_the_slide_reads_white(svs_path):
    with open_slide(svs_path) as s:
        out = s.read_region((2200, 2950), 0, (64, 64))  # mostly beyond the edge
    assert (out[-10:, -10:] == 255).all()


def test_pyramid_is_generic_tiff_at_40x(pyramid_path):
    with open_slide(pyramid_path) as s:
        assert s.properties["openslide.vendor"] == "generic-tiff"
        assert s.level_dimensions == ((2048, 2048), (1024, 1024), (512, 512))
        assert s.mpp == pytest.approx(0.2495, rel=1e-3)
        assert s.magnification == 40
        assert s.best_level_for_downsample(2.0) == 1
        assert s.best_level_for_downsample(3.0) == 1
        assert s.best_level_for_downsample(1.5) == 0


@pytest.mark.parametrize("fixture, words", [
    ("unopenable_path", "cannot open slide"),
    ("unreadable_path", "cannot read slide pixels"),
])
def test_bad_slides_give_one_line(request, fixture, words):
    path = request.getfixturevalue(fixture)
    with pytest.raises(SrmilError) as err:
        open_slide(path)
    msg = str(err.value)
    assert "\n" not in msg and words in msg and path.name in msg


def test_not_a_slide_and_missing_file(tmp_path):
    txt = tmp_path / "notes.svs"
    txt.write_text("hello")
    with pytest.raises(SrmilError, match="notes.svs: not a slide OpenSlide can read"):
        open_slide(txt)
    with pytest.raises(SrmilError, match="no such slide file"):
        open_slide(tmp_path / "missing.svs")


def test_slide_without_pixel_size_needs_an_override(no_mpp_path):
    with pytest.raises(SrmilError) as err:
        open_slide(no_mpp_path)
    assert "nompp.tiff" in str(err.value) and "--mpp-csv" in str(err.value)
    with open_slide(no_mpp_path, mpp=0.25) as s:
        assert (s.mpp, s.mpp_source, s.magnification) == (0.25, "override", 40)


def test_objective_power_gives_the_pixel_size(svs_path, monkeypatch):
    import openslide

    real = openslide.OpenSlide.properties

    def no_mpp(self):
        return {k: v for k, v in real.fget(self).items() if "mpp" not in k}

    monkeypatch.setattr(openslide.OpenSlide, "properties", property(no_mpp))
    with open_slide(svs_path) as s:
        assert s.mpp_source == "objective-power"
        assert s.mpp == pytest.approx(0.5)  # 10 / 20
        assert s.magnification == 20


def test_magnification_buckets():
    assert [magnification_from_mpp(m) for m in (0.12, 0.18, 0.25, 0.5, 1.0, 2.0)] == \
        [80, 60, 40, 20, 10, 5]
    with pytest.raises(SrmilError):
        magnification_from_mpp(4.0)


def test_mpp_csv(tmp_path):
    p = tmp_path / "mpp.csv"
    p.write_text("slide_id,mpp\n001,0.25\nb,0.5\n")
    assert read_mpp_overrides(p) == {"001": 0.25, "b": 0.5}  # ids stay strings
    p.write_text("slide_id,mpp\na,-1\n")
    with pytest.raises(SrmilError, match="line 2: mpp must be positive"):
        read_mpp_overrides(p)
    p.write_text("slide,mpp\na,1\n")
    with pytest.raises(SrmilError, match="expected columns slide_id,mpp"):
        read_mpp_overrides(p)


def test_find_slides_and_lists(tmp_path):
    for name in ("b.svs", "a.ndpi", "c.tiff", "notes.txt", ".hidden.svs", "d.ome.tif"):
        (tmp_path / name).write_bytes(b"x")
    found = find_slides(tmp_path)
    assert list(found) == ["a", "b", "c", "d.ome"]
    assert slide_id_of("x/y.z.svs") == "y.z"
    (tmp_path / "a.svs").write_bytes(b"x")
    with pytest.raises(SrmilError, match="two slides with id 'a'"):
        find_slides(tmp_path)
    lst = tmp_path / "list.csv"
    lst.write_text("wsi,mpp\nb.svs,0.3\nc.tiff,\n")
    slides, mpp = read_slide_list(lst)
    assert slides == {"b": tmp_path / "b.svs", "c": tmp_path / "c.tiff"} and mpp == {"b": 0.3}
    txt = tmp_path / "list.txt"
    txt.write_text("# cohort\nb.svs\nmissing.svs\n")
    with pytest.raises(SrmilError, match="'missing.svs' does not exist"):
        read_slide_list(txt)
