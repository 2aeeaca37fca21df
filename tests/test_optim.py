"""SGD, Adam and Eq. (4) exponential decay against hand-computed updates."""
import numpy as np
import pytest

from minimtl import nn
from minimtl.optim import SGD, Adam, ExponentialDecay

pytestmark = pytest.mark.autograd


def parameter(values):
    return nn.Parameter(np.array(values, dtype=np.float64))


def test_eq4_exponential_decay_values():
    schedule = ExponentialDecay()  # Section 4.3: 0.01, 0.8, 2000
    assert schedule(0) == pytest.approx(0.01)
    assert schedule(2000) == pytest.approx(0.008)
    assert schedule(1000) == pytest.approx(0.01 * 0.8**0.5)
    assert schedule(5000) == pytest.approx(0.01 * 0.8**2.5)
    stairs = ExponentialDecay(0.01, 0.8, 2000, staircase=True)
    assert stairs(1999) == pytest.approx(0.01) and stairs(2000) == pytest.approx(0.008)
    with pytest.raises(ValueError):
        ExponentialDecay(0.01, 1.5, 2000)


def test_sgd_plain_momentum_and_nesterov_match_hand_computation():
    grads = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0])]
    for nesterov in (False, True):
        p = parameter([0.0, 0.0])
        optimizer = SGD([p], lr=0.1, momentum=0.9, nesterov=nesterov)
        w, v = np.zeros(2), np.zeros(2)
        for step, g in enumerate(grads):
            p.grad = g.copy()
            optimizer.step()
            v = g if step == 0 else 0.9 * v + g
            w = w - 0.1 * ((g + 0.9 * v) if nesterov else v)
            np.testing.assert_allclose(p.data, w)
    p = parameter([1.0])
    p.grad = np.array([0.0])
    SGD([p], lr=0.5, weight_decay=0.1).step()
    np.testing.assert_allclose(p.data, [1.0 - 0.5 * 0.1])


def test_optimizer_follows_a_schedule_and_skips_parameters_without_grad():
    p, q = parameter([0.0]), parameter([0.0])
    optimizer = SGD([p, q], lr=ExponentialDecay(1.0, 0.5, 1))
    for _ in range(3):
        p.grad = np.array([1.0])
        optimizer.step()
    np.testing.assert_allclose(p.data, [-(1 + 0.5 + 0.25)])
    np.testing.assert_array_equal(q.data, [0.0])
    assert optimizer.current_lr == pytest.approx(0.125)


def test_adam_matches_the_published_update():
    p = parameter([1.0, -1.0])
    optimizer = Adam([p], lr=0.01)
    m = v = np.zeros(2)
    w = p.data.copy()
    for t, g in enumerate([np.array([0.3, -0.2]), np.array([0.1, 0.4])], start=1):
        p.grad = g
        optimizer.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(p.data, w)


def test_optimizer_state_round_trip_continues_identically():
    def run(split):
        p = parameter([1.0, 2.0])
        optimizer = SGD([p], lr=ExponentialDecay(0.1, 0.5, 2), momentum=0.9)
        for step in range(6):
            if step == split:
                state, values = optimizer.state_dict(), p.data.copy()
                p = parameter(values)
                optimizer = SGD([p], lr=ExponentialDecay(0.1, 0.5, 2), momentum=0.9)
                optimizer.load_state_dict(state)
            p.grad = np.array([np.sin(step), np.cos(step)])
            optimizer.step()
        return p.data

    np.testing.assert_array_equal(run(split=-1), run(split=3))


def test_weight_average_follows_its_formula_and_swaps_back_and_forth():
    from minimtl.nn import Parameter
    from minimtl.optim import WeightAverage

    weight = Parameter(np.array([1.0, 2.0]))
    average = WeightAverage([weight], decay=0.5)
    expected = weight.data.copy()
    for step, value in enumerate([3.0, 5.0, -1.0, 0.5]):
        weight.data[...] = value
        average.update()
        decay = min(0.5, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * value
    np.testing.assert_allclose(average.averages[0], expected)
    average.swap()
    np.testing.assert_allclose(weight.data, expected)
    average.swap()
    np.testing.assert_array_equal(weight.data, [0.5, 0.5])
    again = WeightAverage([Parameter(np.zeros(2))], decay=0.5)
    again.load_state_dict(average.state_dict())
    assert again.updates == 4 and np.array_equal(again.averages[0], average.averages[0])
    with pytest.raises(ValueError, match="decay"):
        WeightAverage([weight], decay=1.0)
