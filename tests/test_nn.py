"""Modules: parameter registration, train/eval, state dicts, weight files."""
import numpy as np
import pytest

import minimtl as mt
from minimtl import nn

pytestmark = pytest.mark.layers


def small_net(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, generator=rng), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 3, generator=rng), nn.Dropout(0.5, generator=rng),
    )


def test_parameters_are_found_in_order_with_dotted_names():
    net = small_net()
    names = [name for name, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"]
    assert net.num_parameters() == 4 * 9 + 4 + 4 + 4 + 64 * 3 + 3
    assert [n for n, _ in net.named_buffers()] == ["1.running_mean", "1.running_var"]


def test_train_and_eval_reach_every_submodule():
    net = small_net()
    net.eval()
    assert not any(m.training for m in net.modules())
    x = mt.Tensor(np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32))
    np.testing.assert_array_equal(net(x).data, net(x).data)  # deterministic in evaluation
    net.train()
    assert all(m.training for m in net.modules())


def test_state_dict_round_trip_through_a_weight_file(tmp_path):
    net, other = small_net(0), small_net(1)
    net(mt.Tensor(np.random.default_rng(2).standard_normal((4, 1, 8, 8)).astype(np.float32)))  # move running stats
    path = mt.save(net, tmp_path / "model.npz")
    other.load_state_dict(mt.load(path))
    for (name, a), (_, b) in zip(net.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary file left behind


def test_loading_a_wrong_file_names_every_problem_and_changes_nothing(tmp_path):
    net = small_net()
    state = net.state_dict()
    del state["0.bias"]
    state["extra.weight"] = np.zeros(2)
    state["5.weight"] = np.zeros((3, 65))
    before = net.state_dict()
    with pytest.raises(ValueError) as error:
        net.load_state_dict(state)
    message = str(error.value)
    assert "missing: 0.bias" in message and "unexpected: extra.weight" in message
    assert "5.weight: file (3, 65), model (3, 64)" in message
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_weight_files_refuse_pickles_and_non_npz(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a readable"):
        mt.load(path)
    with pytest.raises(ValueError, match=".npz"):
        mt.save({"w": np.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(FileNotFoundError):
        mt.load(tmp_path / "absent.npz")


def test_module_errors():
    class Forgetful(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(2, 2)

    with pytest.raises(RuntimeError, match="super"):
        Forgetful()
    with pytest.raises(ValueError, match="init"):
        nn.Linear(2, 2, init="uniform")
    with pytest.raises(ValueError, match="dropout"):
        nn.Dropout(1.0)


def test_paper_initialisation_has_variance_one_hundredth():
    layer = nn.Linear(400, 300, init="paper", generator=np.random.default_rng(0))
    assert layer.weight.data.var() == pytest.approx(0.01, rel=0.02)
    assert layer.weight.data.mean() == pytest.approx(0.0, abs=1e-3)
