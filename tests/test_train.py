"""Training: a step reduces the loss, resume equals an uninterrupted run, NaN stops cleanly."""
import json

import numpy as np
import pytest

from minimtl.models import BKNet
from minimtl.train import (NonFiniteLoss, TaskArrays, TrainConfig, build_model, build_optimizer, evaluate, fit,
                           load_model, train_step)

pytestmark = pytest.mark.train


def tiny_multitask_set(count, seed):
    """Random faces-sized images; smile labels on the first half, gender/age on the second (as two datasets merged)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((count, 1, 48, 48)).astype(np.float32)
    half = count // 2
    labels = {"smile": np.where(np.arange(count) < half, rng.integers(0, 2, count), -1),
              "gender": np.where(np.arange(count) >= half, rng.integers(0, 2, count), -1),
              "age": np.where(np.arange(count) >= half, rng.integers(0, 6, count), -1)}
    # make the labels learnable: brighten the image by its class
    for task, values in labels.items():
        images[values >= 0] += 0.3 * values[values >= 0].reshape(-1, 1, 1, 1)
    masks = {task: (values >= 0).astype(np.float32) for task, values in labels.items()}
    return TaskArrays(images, labels, masks)


def small_config(**changes):
    base = dict(config="C", epochs=2, batch_size=8, lr=0.01, init="he", seed=1)
    base.update(changes)
    return TrainConfig(**base)


def test_one_training_step_on_a_tiny_batch_reduces_the_loss():
    config = small_config()
    model = build_model(config)
    optimizer = build_optimizer(model, config)
    data = tiny_multitask_set(8, 0)
    batch = (data.images, data.labels, data.masks)
    model.reseed_dropout(0)
    first = train_step(model, optimizer, batch, config)
    for _ in range(3):
        model.reseed_dropout(0)
        last = train_step(model, optimizer, batch, config)
    assert sum(v[0] for v in last.values()) < sum(v[0] for v in first.values())


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    data, test = tiny_multitask_set(16, 0), tiny_multitask_set(6, 1)
    config = small_config(epochs=2)
    straight, history = fit(config, data, test, tmp_path / "straight", progress=False)
    fit(config, data, test, tmp_path / "resumed", progress=False, stop_after_epoch=1)
    assert not (tmp_path / "resumed" / "model.npz").exists()
    resumed, resumed_history = fit(config, data, test, tmp_path / "resumed", progress=False, resume=True)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert [h["test"] for h in history] == [h["test"] for h in resumed_history]
    reloaded, reloaded_config = load_model(tmp_path / "straight" / "model.npz")
    assert reloaded_config == config and not reloaded.training
    assert evaluate(reloaded, test, config) == history[-1]["test"]


def test_resume_refuses_a_different_configuration(tmp_path):
    data = tiny_multitask_set(16, 0)
    fit(small_config(epochs=1), data, data, tmp_path, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        fit(small_config(epochs=2, lr=0.5), data, data, tmp_path, progress=False, resume=True)


def test_a_forced_nan_stops_cleanly_naming_step_and_task_and_keeps_the_last_checkpoint(tmp_path):
    data = tiny_multitask_set(16, 0)

    def poison(model, epoch):
        model.heads.age.layers[8].weight.data[0, 0] = np.nan

    with pytest.raises(NonFiniteLoss, match=r"non-finite age output at step 2 in epoch 2"):
        fit(small_config(epochs=3), data, data, tmp_path, progress=False, on_epoch_end=poison)
    history = json.loads(str(np.load(tmp_path / "checkpoint.npz")["history"]))
    assert len(history) == 1  # epoch 1's checkpoint, untouched by the failed epoch


def test_config_round_trips_through_json():
    config = small_config(tasks=["smile"], config="A", task_weights={"smile": 2.0})
    assert TrainConfig.from_json(config.to_json()) == config
    assert isinstance(build_model(config), BKNet)
