"""Bags beyond the in-memory cache are read by a DataLoader worker ahead of the step."""

from __future__ import annotations

import os

import pytest
import torch

from helpers import trident_bag
from srmil.errors import BagError
from srmil.training.data import BagDataset, prefetched


def make_data(tmp_path, n=5, cache=False):
    paths = [trident_bag(tmp_path / f"s{i}.h5", n=30 + i, seed=i) for i in range(n)]
    return BagDataset(paths, targets=[i % 2 for i in range(n)], cache=cache)


def test_worker_reads_the_same_bags_in_the_given_order(tmp_path):
    data = make_data(tmp_path)
    order = [3, 0, 4, 1, 2, 3]
    got = list(prefetched(data, order, workers=1))
    assert [b.slide_id for b in got] == [f"s{i}" for i in order]
    for i, b in zip(order, got, strict=True):
        ref = data.load(i)
        assert torch.equal(b.x, ref.x) and torch.equal(b.edge_index, ref.edge_index)
        assert b.y == ref.y and torch.equal(b.neighbours.index, ref.neighbours.index)


def test_worker_is_another_process(tmp_path, monkeypatch):
    """The bags really are read elsewhere: this process's reader is never called."""
    data = make_data(tmp_path, n=3)
    calls = []
    real = BagDataset.load

    def load(self, i):
        calls.append(os.getpid())
        return real(self, i)

    monkeypatch.setattr(BagDataset, "load", load)
    assert len(list(prefetched(data, [0, 1, 2], workers=1))) == 3
    assert calls == []  # the worker's calls were made in its own (forked) process
    assert len(list(prefetched(data, [0, 1], workers=0))) == 2 and calls == [os.getpid()] * 2


def test_cached_data_is_read_in_process(tmp_path):
    data = make_data(tmp_path, n=3, cache=True)
    first = list(prefetched(data, [0, 1, 2], workers=1))
    assert [b.slide_id for b in first] == ["s0", "s1", "s2"]
    assert all(data[i] is first[i] for i in range(3))  # the cache holds them


def test_a_bad_bag_in_a_worker_is_one_line(tmp_path):
    data = make_data(tmp_path, n=3)
    data.paths[1].write_bytes(b"not an hdf5 file")
    it = prefetched(data, [0, 1, 2], workers=1)
    assert next(it).slide_id == "s0"
    with pytest.raises(BagError) as e:
        next(it)
    msg = str(e.value)
    assert "s1.h5" in msg and "\n" not in msg and "Traceback" not in msg
