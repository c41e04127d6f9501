import h5py
import numpy as np
import pytest
import torch

from helpers import clam_h5, grid_coords, pt_bag, raw_h5, stamp_h5, trident_bag
from srmil.bags.readers import BAG_READERS, find_bags, read_bag
from srmil.errors import BagError


def test_registry_lists_every_reader():
    assert BAG_READERS.names() == ["clam_h5", "clam_pt", "stamp", "trident"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_trident_bag_keeps_dtype_and_takes_step_from_attrs(tmp_path, dtype):
    p = trident_bag(tmp_path / "s1.h5", n=30, d=6, mag0=40, ps=224, dtype=dtype)
    bag = read_bag(p)
    assert bag.reader == "trident"
    assert bag.slide_id == "s1" and bag.source == p
    assert bag.features.dtype == dtype and bag.features.shape == (30, 6)
    assert bag.coords.dtype == np.int64 and bag.coords.shape == (30, 2)
    assert bag.patch_size_level0 == 448 and bag.step == 448  # 40× scan, 20×/224 px
    assert bag.problems() == []


def test_trident_overlap_shrinks_the_step(tmp_path):
    bag = read_bag(trident_bag(tmp_path / "s.h5", mag0=40, ps=256, overlap=32))
    assert bag.patch_size_level0 == 512 and bag.step == 512 - 64


def test_trident_step_from_magnifications_when_patch_size_level0_missing(tmp_path):
    p = trident_bag(tmp_path / "s.h5", mag0=40, ps=224)
    with h5py.File(p, "a") as h5:
        del h5["coords"].attrs["patch_size_level0"]
    assert read_bag(p).step == 448


def test_trident_none_strings_are_ignored(tmp_path):
    c = grid_coords(10, 224)
    p = raw_h5(tmp_path / "x.h5", features=np.ones((10, 4), np.float32), coords=c)
    with h5py.File(p, "a") as h5:
        h5["coords"].attrs["patch_size_level0"] = "None"
    bag = read_bag(p)
    assert bag.step is None and bag.reader == "trident"


def test_clam_h5_step_is_patch_size_times_downsample(tmp_path):
    bag = read_bag(clam_h5(tmp_path / "h5_files" / "c1.h5", ps=256, downsample=2.0))
    assert bag.reader == "clam_h5"
    assert bag.step == 512


def test_stamp_coords_in_micrometres(tmp_path):
    bag = read_bag(stamp_h5(tmp_path / "st.h5", tile_um=112.0))
    assert bag.reader == "stamp" and bag.coord_unit == "um"
    assert bag.features.dtype == np.float16
    assert bag.step == 112.0 and bag.coords.dtype == np.float64


def test_clam_pt_pairs_with_coords_from_h5_files(tmp_path):
    clam_h5(tmp_path / "h5_files" / "007.h5", n=40, downsample=1.0)
    p = pt_bag(tmp_path / "pt_files" / "007.pt", n=40)
    bag = read_bag(p)
    assert bag.reader == "clam_pt" and bag.slide_id == "007"
    assert bag.coords.shape == (40, 2) and bag.step == 256
    alone = read_bag(pt_bag(tmp_path / "lone" / "x.pt"))
    assert alone.coords is None


def test_clam_pt_row_mismatch_with_its_h5(tmp_path):
    clam_h5(tmp_path / "h5_files" / "a.h5", n=40)
    p = pt_bag(tmp_path / "pt_files" / "a.pt", n=39)
    with pytest.raises(BagError, match="39 rows but 'coords' has 40"):
        read_bag(p)


class Boom:
    """Any class outside the weights-only allow-list: unpickling it would run code."""


def test_pt_with_a_pickled_object_is_refused(tmp_path):
    p = tmp_path / "evil.pt"

    torch.save({"obj": Boom()}, p)
    with pytest.raises(BagError, match="cannot load as a torch tensor file"):
        read_bag(p)


def test_pt_holding_a_dict_is_refused(tmp_path):
    p = tmp_path / "d.pt"
    torch.save({"features": torch.zeros(3, 2)}, p)
    with pytest.raises(BagError, match="holds a dict"):
        read_bag(p)


def _file_with(path, data):
    path.write_bytes(data)
    return path


def _h5_with(tmp_path, name, **ds):
    return raw_h5(tmp_path / name, **ds)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: t / "nope.h5", "no such file"),
        (lambda t: _file_with(t / "junk.h5", b"not hdf5 at all"),
         "not an HDF5 or torch file"),
        (lambda t: _h5_with(t, "nofeat.h5", coords=np.zeros((3, 2))),
         "no 'features' (or STAMP 'feats') dataset; found: coords"),
        (lambda t: _h5_with(t, "nocoords.h5", features=np.zeros((3, 2), np.float32)),
         "'features' present but no 'coords' dataset"),
        (lambda t: _h5_with(t, "c3.h5", features=np.zeros((3, 4), np.float32),
                            coords=np.zeros((3, 3))),
         "'coords' has shape (3, 3), expected (N, 2)"),
        (lambda t: _h5_with(t, "f1.h5", features=np.zeros(3, np.float32),
                            coords=np.zeros((3, 2))),
         "'features' has shape (3,), expected (N, D)"),
        (lambda t: _h5_with(t, "mm.h5", features=np.zeros((4, 2), np.float32),
                            coords=np.zeros((3, 2))),
         "'features' has 4 rows but 'coords' has 3"),
        (lambda t: _h5_with(t, "int.h5", features=np.zeros((3, 2), np.int32),
                            coords=np.zeros((3, 2))),
         "dtype int32"),
    ],
)
def test_bad_bags_raise_one_line_naming_the_file(tmp_path, make, message):
    p = make(tmp_path)
    with pytest.raises(BagError) as e:
        read_bag(p)
    text = str(e.value)
    assert text.startswith(str(p) + ": ")
    assert message in text
    assert "\n" not in text


def test_truncated_h5_is_reported(tmp_path):
    p = trident_bag(tmp_path / "t.h5", n=2000, d=64)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError) as e:
        read_bag(p)
    assert str(p) in str(e.value)
    assert "truncated" in str(e.value) or "cannot read" in str(e.value)


def test_content_problems_empty_nan_duplicates(tmp_path):
    empty = read_bag(_h5_with(tmp_path, "e.h5", features=np.zeros((0, 4), np.float32),
                              coords=np.zeros((0, 2), np.int64)))
    assert [p.message for p in empty.problems()] == ["empty bag (0 patches)"]

    f = np.ones((5, 3), np.float32)
    f[2, 1] = np.nan
    f[4, 0] = np.inf
    nan = read_bag(_h5_with(tmp_path, "n.h5", features=f, coords=grid_coords(5, 224)))
    (prob,) = nan.problems()
    assert prob.is_error and "NaN/Inf in 2 of 5 rows (first row 2)" in prob.message

    c = grid_coords(5, 224)
    c[3] = c[1]
    dup = read_bag(_h5_with(tmp_path, "d.h5", features=np.ones((5, 3), np.float32), coords=c))
    (prob,) = dup.problems()
    assert "1 duplicate coordinates" in prob.message and "rows 1, 3" in prob.message


def test_find_bags_skips_patch_files_and_rejects_clashes(tmp_path):
    trident_bag(tmp_path / "a.h5")
    trident_bag(tmp_path / "b.h5")
    (tmp_path / "a_patches.h5").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert sorted(find_bags(tmp_path)) == ["a", "b"]
    pt_bag(tmp_path / "a.pt")
    with pytest.raises(BagError, match="two bags for slide 'a'"):
        find_bags(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(BagError, match="no feature bags"):
        find_bags(tmp_path / "sub")
    assert find_bags(tmp_path / "b.h5") == {"b": tmp_path / "b.h5"}
