"""The paper's three configurations: Table 3's parameter counts, shapes, summary, bad input."""
import numpy as np
import pytest

import minimtl as mt
from minimtl import nn
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
    """``fuse_for_inference`` folds each conv block's batch-norms and ReLUs into its convolutions (and pools without
    indices under ``no_grad``); its logits equal the evaluation-mode layer-by-layer forward's."""
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
    inference = model.fuse_for_inference()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in inference.block1.modules())  # folded away
    calls = []
    original = inference.block1.forward
    inference.block1.forward = lambda t: calls.append(1) or original(t)
    with mt.no_grad():
        fused = inference(mt.Tensor(x))
    assert calls == [1]
    for task in model.tasks:
        assert fused[task].data.dtype == dtype
        scale = float(np.abs(layer_by_layer[task].data).max())
        np.testing.assert_allclose(fused[task].data, layer_by_layer[task].data, rtol=tolerance, atol=tolerance * scale)


def test_the_evaluation_forward_is_the_same_with_and_without_no_grad():
    model = BKNet("C", seed=1).eval()
    x = mt.Tensor(np.random.default_rng(2).standard_normal((3, 1, 48, 48)).astype(np.float32))
    recorded = model(x)
    with mt.no_grad():
        plain = model(x)
    for task in model.tasks:
        np.testing.assert_allclose(plain[task].data, recorded[task].data, rtol=1e-6, atol=1e-6)


def test_training_mode_never_takes_the_inference_path():
    """Training uses batch statistics, which cannot be folded: ``forward`` goes layer by layer even under no_grad
    (the running statistics move), and an inference copy refuses to train."""
    model = BKNet("B", seed=0)
    norm = model.block1.layers[1]
    before = norm.running_mean.copy()
    with mt.no_grad():
        model(mt.Tensor(np.random.default_rng(1).standard_normal((2, 1, 48, 48)).astype(np.float32)))
    assert isinstance(norm, nn.BatchNorm2d) and not np.array_equal(norm.running_mean, before)
    with pytest.raises(ValueError, match="inference-only copy"):
        model.fuse_for_inference().train()


def test_conv_blocks_are_their_layers_in_order():
    block = BKNet("B", seed=0).block2
    kinds = [type(layer).__name__ for layer in block.layers]
    assert kinds == ["Conv2d", "BatchNorm2d", "Conv2d", "BatchNorm2d", "MaxPool2d"]
    assert all(layer.relu for layer in block.layers if isinstance(layer, nn.BatchNorm2d))
    x = mt.Tensor(np.random.default_rng(3).standard_normal((2, 32, 24, 24)).astype(np.float32))
    np.testing.assert_array_equal(block(x).data, block.layers(x).data)


def test_a_state_dict_with_the_keys_of_before_the_relu_option_still_loads():
    """Old checkpoints had block layers Conv2d, BatchNorm2d, ReLU, ...: conv i at 3i, batch-norm at 3i + 1."""
    model = BKNet("C", seed=4)
    old = {}
    for name, value in model.state_dict().items():
        parts = name.split(".")
        if parts[0].startswith("block"):
            layer, role = divmod(int(parts[2]), 2)
            parts[2] = str(3 * layer + role)
        old[".".join(parts)] = value
    assert "block1.layers.4.running_mean" in old and "block1.layers.3.weight" in old
    fresh = BKNet("C", seed=5)
    fresh.load_state_dict(old)
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
