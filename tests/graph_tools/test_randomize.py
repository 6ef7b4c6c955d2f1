"""Parameter randomisation for the sanity check: which initializers change, how they are drawn, the cascade."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from camserve import graph_tools as gt
from camserve.graph_tools import randomize as gr
from camserve.service.model_config import load_config

MODEL = load_config("models/mobilenet_v2").path


def _weights(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.fixture(scope="module")
def model():
    return gt.load(MODEL)


def test_parameter_layers_are_every_conv_and_the_classifier_in_order(model):
    layers = gr.parameter_layers(model)
    convs = [n.output[0] for n in model.graph.node if n.op_type == "Conv"]
    assert layers[:-1] == convs and layers[-1] == "logits" and len(layers) == 53


def test_randomize_redraws_only_the_named_layers_with_pytorch_default_bounds(model):
    layers = gr.parameter_layers(model)
    chosen = [layers[-1], layers[0]]
    out = gr.randomize(model, chosen, seed=7)
    before, after = _weights(model), _weights(out)
    producing = {n.output[0]: n for n in model.graph.node}
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    expected = {name for layer in chosen for name in producing[layer].input[1:3]}
    assert changed == expected
    first_conv = after[producing[layers[0]].input[1]]           # (32, 3, 3, 3): fan_in 27
    assert np.abs(first_conv).max() <= 1 / np.sqrt(27) and np.abs(first_conv).max() > 0.9 / np.sqrt(27)
    gemm = producing["logits"]
    assert np.abs(after[gemm.input[1]]).max() <= 1 / np.sqrt(1280)
    assert after[gemm.input[2]].shape == (1000,) and after[gemm.input[2]].dtype == np.float32
    np.testing.assert_array_equal(_weights(gr.randomize(model, chosen, seed=7))[gemm.input[1]], after[gemm.input[1]])
    assert not np.array_equal(_weights(gr.randomize(model, chosen, seed=8))[gemm.input[1]], after[gemm.input[1]])


def test_cascade_stages_nest_from_the_top(model):
    stages = gr.cascade(model, 5)
    assert [len(layers) for _, layers in stages] == [1, 14, 27, 40, 53]
    assert stages[0] == ("logits", ["logits"])
    for (_, shallow), (_, deep) in zip(stages, stages[1:]):
        assert deep[:len(shallow)] == shallow
    # a layer drawn at stage k keeps the same values at stage k + 1 (one stream per layer)
    a = _weights(gr.randomize(model, stages[1][1]))
    b = _weights(gr.randomize(model, stages[2][1]))
    name = [n for n in model.graph.node if n.output[0] == stages[1][0]][0].input[1]
    np.testing.assert_array_equal(a[name], b[name])


def test_unknown_layer_is_refused(model):
    with pytest.raises(gt.GraphError, match="not the output of a Conv/Gemm/MatMul"):
        gr.randomize(model, ["input"])
