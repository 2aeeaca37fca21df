"""Training: a step reduces the loss, resume equals an uninterrupted run, NaN stops cleanly."""
import json

import numpy as np
import pytest

from minimtl.data import MultiTaskDataset, SyntheticFaces, normalize
from minimtl.models import BKNet
from minimtl.optim import ExponentialDecay
from minimtl.train import (DECAYS_PER_RUN, NonFiniteLoss, TrainConfig, batch_norm_loader, build_model, build_optimizer,
                           evaluate, fit, fit_schedule, load_model, recompute_batch_norm_statistics, train_loader,
                           train_step)

pytestmark = pytest.mark.train


def tiny_multitask_set(count, seed):
    """Drawn faces as two merged sources, like the paper's: smile labels on one half, gender and age on the other."""
    return MultiTaskDataset([SyntheticFaces(count // 2, seed, tasks=("smile",)),
                             SyntheticFaces(count - count // 2, seed + 100, tasks=("gender", "age"))])


def small_config(**changes):
    base = dict(config="C", epochs=2, batch_size=8, lr=0.01, init="he", seed=1)
    base.update(changes)
    return TrainConfig(**base)


def test_one_training_step_on_a_tiny_batch_reduces_the_loss():
    config = fit_schedule(small_config(), steps_per_epoch=1)
    model = build_model(config)
    optimizer = build_optimizer(model, config)
    data = tiny_multitask_set(8, 0)
    batch = (normalize(data.images), data.labels, data.masks)
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
    assert reloaded_config == fit_schedule(config, len(train_loader(data, config, 0))) and not reloaded.training
    assert evaluate(reloaded, test, flip=reloaded_config.test_flip) == history[-1]["test"]


def test_each_epoch_draws_its_own_reproducible_order_and_augmentation():
    data = tiny_multitask_set(20, 0)
    config = small_config()
    first, again, other = (next(iter(train_loader(data, config, epoch))) for epoch in (0, 0, 1))
    np.testing.assert_array_equal(first.images, again.images)
    assert not np.array_equal(first.images, other.images)


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


def test_the_default_schedule_is_fitted_to_the_run_and_an_explicit_one_is_kept():
    fitted = fit_schedule(TrainConfig(epochs=8), steps_per_epoch=300)
    assert fitted.decay_steps == 240  # 2,400 steps / DECAYS_PER_RUN
    assert ExponentialDecay(0.01, 0.8, fitted.decay_steps)(2400) == pytest.approx(0.01 * 0.8**DECAYS_PER_RUN)
    assert fit_schedule(TrainConfig(epochs=8, decay_steps=2000), 300).decay_steps == 2000  # Section 4.3's
    with pytest.raises(ValueError, match="fit_schedule"):
        build_optimizer(build_model(small_config()), TrainConfig())


def test_resuming_with_more_epochs_keeps_the_schedule_the_run_started_with(tmp_path):
    data = tiny_multitask_set(48, 3)
    steps = len(train_loader(data, small_config(batch_size=4), 0))
    assert round(steps / DECAYS_PER_RUN) != round(2 * steps / DECAYS_PER_RUN)  # fitting anew would differ
    fit(small_config(epochs=1, batch_size=4), data, data, tmp_path, progress=False)
    first = TrainConfig.from_json((tmp_path / "config.json").read_text())
    assert first.decay_steps == max(1, round(steps / DECAYS_PER_RUN))
    fit(small_config(epochs=2, batch_size=4), data, data, tmp_path, resume=True, progress=False)
    assert TrainConfig.from_json((tmp_path / "config.json").read_text()).decay_steps == first.decay_steps


def test_recomputed_batch_norm_statistics_are_the_plain_average_over_the_batches():
    """Three batches of a one-layer model: the running mean is the mean of the three batch means, the running
    variance the mean of the three unbiased batch variances, whatever the running values were before; the
    momentum and the mode are restored."""
    from minimtl import nn

    class Normalise(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm2d(2)

        def forward(self, x):
            return self.norm(x)

    model = Normalise()
    model.norm.running_mean[...] = 50.0
    model.eval()
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((4, 2, 3, 3)) * (k + 1) + k).astype(np.float32) for k in range(3)]
    assert recompute_batch_norm_statistics(model, batches + [batches[0][:1]]) == 3  # a batch of one is skipped
    means = [b.astype(np.float64).mean(axis=(0, 2, 3)) for b in batches]
    variances = [b.astype(np.float64).var(axis=(0, 2, 3), ddof=1) for b in batches]
    np.testing.assert_allclose(model.norm.running_mean, np.mean(means, axis=0), rtol=1e-5)
    np.testing.assert_allclose(model.norm.running_var, np.mean(variances, axis=0), rtol=1e-5)
    assert model.norm.momentum == 0.1 and not model.training


def test_the_batch_norm_batches_shuffle_and_augment_from_two_generators_of_their_own(monkeypatch):
    """Purposes 0 and 2 shuffle and augment the training batches and 1 draws dropout; the batch-norm pass takes two
    other purposes, one each (with one purpose for both, shuffling and augmentation would share random numbers)."""
    from minimtl import train

    seen = []
    original = train.train_loader

    def spy(data, config, epoch, streams=(0, 2)):
        seen.append(streams)
        return original(data, config, epoch, streams=streams)

    monkeypatch.setattr(train, "train_loader", spy)
    list(batch_norm_loader(tiny_multitask_set(24, 0), small_config(batch_norm_batches=1), 0))
    (shuffle, augment), = seen
    assert shuffle != augment and not {shuffle, augment} & {0, 1, 2}


def test_the_batch_norm_pass_uses_its_own_batches_and_leaves_training_unchanged(tmp_path):
    """The batches for the statistics differ from the epoch's training batches; a run with the pass trains to the
    same weights as one without it (only the running statistics, used in evaluation, differ)."""
    data, test = tiny_multitask_set(24, 0), tiny_multitask_set(6, 1)
    config = small_config(epochs=2, batch_norm_batches=2)
    statistics_batch = next(iter(batch_norm_loader(data, config, 0)))
    training_batch = next(iter(train_loader(data, config, 0)))
    assert not np.array_equal(statistics_batch.images, training_batch.images)
    assert len(list(batch_norm_loader(data, config, 0))) == 2
    with_pass, _ = fit(config, data, test, tmp_path / "with", progress=False)
    without, _ = fit(small_config(epochs=2, batch_norm_batches=0), data, test, tmp_path / "without", progress=False)
    for (name, a), (_, b) in zip(with_pass.state_dict().items(), without.state_dict().items()):
        if "running" in name:
            assert not np.array_equal(a, b), name
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_weight_average_resumes_exactly_and_is_what_is_evaluated_and_saved(tmp_path):
    data, test = tiny_multitask_set(16, 0), tiny_multitask_set(6, 1)
    config = small_config(epochs=2, weight_average=0.9)
    straight, history = fit(config, data, test, tmp_path / "straight", progress=False)
    fit(config, data, test, tmp_path / "resumed", progress=False, stop_after_epoch=1)
    resumed, resumed_history = fit(config, data, test, tmp_path / "resumed", progress=False, resume=True)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert [h["test"] for h in history] == [h["test"] for h in resumed_history]
    reloaded, reloaded_config = load_model(tmp_path / "straight" / "model.npz")
    # the saved model is the averaged one that was evaluated
    assert evaluate(reloaded, test, flip=reloaded_config.test_flip) == history[-1]["test"]
    plain, _ = fit(small_config(epochs=2, weight_average=0.0), data, test, tmp_path / "plain", progress=False)
    assert not np.array_equal(plain.block1.layers[0].weight.data, straight.block1.layers[0].weight.data)
