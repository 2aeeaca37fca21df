"""The paper's three configurations: Table 3's parameter counts, shapes, summary, bad input."""
import numpy as np
import pytest

import minimtl as mt
from minimtl.models import BKNet, PAPER_PARAMETERS

pytestmark = pytest.mark.train


@pytest.mark.parametrize("config,tasks", [("A", ["smile"]), ("B", ["smile", "gender", "age"]), ("C", ["smile", "gender", "age"])])
def test_table3_parameter_counts_come_out_exactly(config, tasks):
    model = BKNet(config, tasks)
    assert model.num_parameters() == PAPER_PARAMETERS[config]
    assert "matches" in model.summary()


def test_learned_batch_norm_scale_is_reported_beside_the_paper_count():
    summary = BKNet("C", batch_norm_scale=True).summary()
    assert "differs by +2,752" in summary and "without them the count is 3,953,130" in summary


def test_forward_shapes_and_config_c_fuses_288_first_block_features():
    x = mt.Tensor(np.random.default_rng(0).standard_normal((3, 1, 48, 48)).astype(np.float32))
    for config, width in (("B", 2304), ("C", 2592)):
        model = BKNet(config)
        assert model.features(x).shape == (3, width)
        assert {task: out.shape for task, out in model(x).items()} == {"smile": (3, 2), "gender": (3, 2), "age": (3, 6)}


def test_same_seed_same_model_and_paper_initialisation():
    a, b = BKNet("B", seed=3), BKNet("B", seed=3)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x, y, err_msg=name)
    weights = np.concatenate([p.data.ravel() for p in a.decay_parameters()])
    assert weights.var() == pytest.approx(0.01, rel=0.02)


def test_bad_configurations_and_inputs():
    with pytest.raises(ValueError, match="config"):
        BKNet("D")
    with pytest.raises(ValueError, match="one task"):
        BKNet("A", ["smile", "age"])
    with pytest.raises(ValueError, match="unknown tasks"):
        BKNet("B", ["smile", "emotion"])
    with pytest.raises(ValueError, match="48×48"):
        BKNet("A", ["smile"])(mt.Tensor(np.zeros((1, 1, 32, 32), np.float32)))
    with pytest.raises(ValueError, match="channels"):
        BKNet("A", ["smile"])(mt.Tensor(np.zeros((1, 3, 48, 48), np.float32)))


@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_inference_path_equals_the_layer_by_layer_forward(dtype, tolerance):
    """In evaluation mode under ``no_grad`` each conv block folds its batch-norms and ReLUs into its convolutions
    and pools without indices (``ConvBlock.inference``); the logits equal the layer-by-layer forward's."""
    model = BKNet("C", seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 48, 48)).astype(dtype)
    model.train()
    for _ in range(2):  # running statistics that are not the initial 0 and 1
        model(mt.Tensor(x * rng.uniform(0.5, 2.0) + rng.normal()))
    for _, parameter in model.named_parameters():
        parameter.data = parameter.data.astype(dtype)
    model.eval()
    layer_by_layer = model(mt.Tensor(x))  # gradients enabled: the ordinary forward
    calls = []
    original = model.block1.inference
    model.block1.inference = lambda t: calls.append(1) or original(t)
    with mt.no_grad():
        fused = model(mt.Tensor(x))
    assert calls == [1]
    for task in model.tasks:
        assert fused[task].data.dtype == dtype
        scale = float(np.abs(layer_by_layer[task].data).max())
        np.testing.assert_allclose(fused[task].data, layer_by_layer[task].data, rtol=tolerance, atol=tolerance * scale)


def test_training_mode_never_takes_the_inference_path():
    """Training uses batch statistics, which cannot be folded: ``forward`` goes layer by layer even under no_grad."""
    model = BKNet("B", seed=0)
    model.block1.inference = lambda t: pytest.fail("inference path taken in training mode")
    with mt.no_grad():
        model(mt.Tensor(np.zeros((2, 1, 48, 48), np.float32)))
