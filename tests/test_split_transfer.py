"""Split transfer (paper Fig. 6(b)): train on half the classes (``DATA:classes=0-4``), fit one linear head on the
frozen last layer for the other half (``--transfer-data DATA:classes=5-9``) and score it after every layer."""

from __future__ import annotations

import _refs as ref
import numpy as np
import pytest
import torch
from fixtures import data_batches, train_config


@pytest.fixture(scope="module")
def half_model(tmp_path_factory):
    """A residual MLP trained by ``layerwise train`` on digits 0–4 only (a 5-class head)."""
    from layerwise.training import train

    tmp = tmp_path_factory.mktemp("split")
    train(train_config(tmp, "half", data="digits:classes=0-4", limit=None, epochs=2, depth=3))
    return tmp / "half"


def test_a_class_subset_trains_a_head_of_its_size(half_model):
    from layerwise.checkpoints import load_model
    from layerwise.data import load_dataset

    bundle = load_model(str(half_model))
    assert bundle.stack.num_classes == 5
    test = load_dataset("digits:classes=0-4", "test")
    full = load_dataset("digits", "test")
    assert len(test) == int((full.labels < 5).sum()) and set(test.labels.tolist()) == set(range(5))


def test_the_other_half_is_read_by_one_head_fitted_on_the_last_layer(half_model, tmp_path):
    """``exit --transfer-data digits:classes=5-9`` against a float64 reference: the readout inputs norm(hˡ) from
    the weights, the classes 5..9 as labels 0..4, one sklearn logistic regression fitted on the last layer."""
    from sklearn.linear_model import LogisticRegression

    from layerwise.checkpoints import load_model
    from layerwise.commands.exit import ExitOptions, run

    results = run(ExitOptions(model=[str(half_model)], data="digits:classes=0-4", out=tmp_path / "exit",
                              val_split=None, transfer_data="digits:classes=5-9", transfer_splits="train,test",
                              transfer_limit=None, device="cpu"))
    got = results["models"][0]["transfer"]["per_layer_accuracy"]

    bundle = load_model(str(half_model))
    model = bundle.model.eval()

    def features(split):
        batches = data_batches("digits", bundle.inputs, split)  # all ten classes, the model's own input pipeline
        x, y = torch.cat([b["inputs"] for b in batches]), torch.cat([b["labels"] for b in batches])
        keep = y >= 5
        with torch.no_grad():
            hs = ref.own_mlp_hidden64(model, x[keep])
            z = [ref.layer_norm64(h, model.norm.weight, model.norm.bias, model.norm.eps).numpy() for h in hs]
        return z, (y[keep] - 5).numpy()

    (z_train, y_train), (z_test, y_test) = features("train"), features("test")
    head = LogisticRegression(C=1.0, max_iter=1000).fit(z_train[-1], y_train)
    want = [float(np.mean(head.predict(z) == y_test)) for z in z_test]
    assert len(got) == 4 and want[-1] > 0.6  # five new classes: chance is 0.2
    # float32 features in the library: a borderline sample may flip
    assert got == pytest.approx(want, abs=1 / len(y_test) + 1e-12)
    assert results["models"][0]["transfer"]["classes"] == 5
