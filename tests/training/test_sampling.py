"""Class weights and the balanced sampler (training/sampling.py)."""

import numpy as np
import pytest

from srmil.config import TrainConfig
from srmil.errors import ConfigError, SrmilError
from srmil.training.sampling import check_sampling, class_weights, epoch_order

CLASSES = ["a", "b", "c"]
TARGETS = [0] * 12 + [1] * 6 + [2] * 2  # 60 % / 30 % / 10 %


def test_balanced_weights_are_inverse_frequency_with_mean_one_over_bags():
    w = class_weights(TrainConfig(class_weights="balanced"), TARGETS, CLASSES)
    counts = np.bincount(TARGETS)
    # inverse frequency: each class's bags weigh the same in total
    np.testing.assert_allclose(w * counts, np.full(3, (w * counts)[0]))
    np.testing.assert_allclose(w[np.asarray(TARGETS)].mean(), 1.0)


def test_given_weights_keep_their_ratios_and_are_normalised():
    w = class_weights(TrainConfig(class_weights=(1.0, 2.0, 4.0)), TARGETS, CLASSES)
    np.testing.assert_allclose(w / w[0], [1, 2, 4])
    np.testing.assert_allclose(w[np.asarray(TARGETS)].mean(), 1.0)
    assert class_weights(TrainConfig(), TARGETS, CLASSES) is None


@pytest.mark.parametrize("spec, msg", [
    ((1.0, 2.0), "has 2 weight(s), but there are 3 classes (a, b, c)"),
    ((1.0, -1.0, 1.0), "finite and >= 0"),
    ((1.0, float("nan"), 1.0), "finite and >= 0"),
])
def test_bad_weights_are_one_line(spec, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        class_weights(TrainConfig(class_weights=spec), TARGETS, CLASSES)


def test_unknown_choices_are_refused_by_the_config():
    with pytest.raises(ConfigError, match="class_weights must be none, balanced"):
        TrainConfig(class_weights="inverse")
    with pytest.raises(ConfigError, match="train.sampler must be one of shuffle, balanced"):
        TrainConfig(sampler="oversample")


def test_balanced_sampler_sees_classes_equally_often_and_is_deterministic():
    cfg = TrainConfig(sampler="balanced", seed=3)
    order = epoch_order(cfg, TARGETS, CLASSES, 0)
    assert len(order) == len(TARGETS)
    counts = np.bincount(np.asarray(TARGETS)[order], minlength=3)
    assert counts.max() - counts.min() <= 1  # 20 draws over 3 classes: 7, 7, 6
    # the common class is drawn without replacement: no bag of it twice in an epoch
    common = order[np.asarray(TARGETS)[order] == 0]
    assert len(set(common.tolist())) == len(common)
    np.testing.assert_array_equal(order, epoch_order(cfg, TARGETS, CLASSES, 0))  # resume
    assert not np.array_equal(order, epoch_order(cfg, TARGETS, CLASSES, 1))
    # the rare class (2 bags) is drawn ~7 times: every one of its bags is used
    assert set(order[np.asarray(TARGETS)[order] == 2].tolist()) == {18, 19}


def test_shuffle_sampler_is_the_reference_order():
    cfg = TrainConfig(seed=5)
    np.testing.assert_array_equal(epoch_order(cfg, TARGETS, CLASSES, 2),
                                  np.random.default_rng([5, 2]).permutation(len(TARGETS)))
    np.testing.assert_array_equal(
        epoch_order(TrainConfig(shuffle=False), TARGETS, CLASSES, 2), np.arange(20))


def test_a_class_absent_from_the_training_split_is_one_line():
    targets = [0] * 5 + [1] * 5  # no class c
    with pytest.raises(SrmilError, match="fold 2: train.sampler balanced: class.*c absent"):
        check_sampling(TrainConfig(sampler="balanced"), targets, CLASSES, "fold 2")
    with pytest.raises(SrmilError, match="class_weights balanced: class.*c absent"):
        check_sampling(TrainConfig(class_weights="balanced"), targets, CLASSES)
    check_sampling(TrainConfig(), targets, CLASSES)  # the defaults never refuse
