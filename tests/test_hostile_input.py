"""Hostile and broken input, one test per class (issue 25): files that are no regular files (a FIFO, /dev/zero),
run folders that point outside themselves, JSON of the wrong shape, a tokenizer that does not fit its model,
absurd labels and malformed rows, and the valid inputs that used to be refused (a long CSV field, a corpus file
whose name holds a colon, a plain ``save_pretrained`` GPT-2 folder)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from fixtures import CLI, subprocess_env

from layerwise import files
from layerwise.data import load_dataset, load_table
from layerwise.data.load import split_spec
from layerwise.errors import LayerwiseError
from layerwise.report.html import render
from layerwise.reproduce.recipe import Budget, Step, read_recipe
from layerwise.reproduce.runner import finished, update_record
from layerwise.training import resolve_config

PNG = files.PNG_SIGNATURE + b"\x00\x00\x00\rIHDR" + b"\x00" * 17  # a header is all the report checks
SECRET = "TOPSECRET-do-not-mail"


@pytest.fixture(autouse=True)
def no_hang():
    """A reader that blocks (opening a FIFO) fails the test instead of hanging the suite."""
    def hung(signum, frame):
        raise TimeoutError("a reader blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert message and "\n" not in message
    return message


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# ---------------------------------------------------------------- regular files of bounded size


@pytest.mark.parametrize("name", ["config.yaml", "table.csv", "table.tsv", "rows.jsonl", "corpus.txt", "fig.yaml"])
def test_fifo_and_device_are_refused_before_opening(tmp_path, name):
    readers = {"config.yaml": lambda p: resolve_config(config_file=p), "fig.yaml": read_recipe,
               "table.csv": lambda p: load_table(p, "all"), "table.tsv": lambda p: load_table(p, "all"),
               "rows.jsonl": lambda p: load_table(p, "all"), "corpus.txt": lambda p: load_dataset(str(p))}
    pipe = fifo(tmp_path / name)
    with pytest.raises(LayerwiseError, match="FIFO") as e:
        readers[name](pipe)
    one_line(e)
    zero = tmp_path / "zero" / name
    zero.parent.mkdir()
    zero.symlink_to("/dev/zero")
    with pytest.raises(LayerwiseError, match="device file") as e:
        readers[name](zero)
    one_line(e)


def test_a_file_over_its_cap_is_refused_from_its_size(tmp_path, monkeypatch):
    monkeypatch.setitem(files.LIMITS, "table", 1000)
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + "a,0\n" * 500)
    with pytest.raises(LayerwiseError, match="is 2011 bytes, over the 1000 bytes a table file may have"):
        load_table(path, "all")


def test_read_bytes_never_reads_past_the_cap(tmp_path, monkeypatch):
    """A file whose size says less than it holds (as /proc files say 0, or one that grew after the check) is
    still read at most cap + 1 bytes."""
    monkeypatch.setitem(files.LIMITS, "image", 16)
    path = tmp_path / "x.png"
    path.write_bytes(PNG)
    real_stat = os.stat

    def says_small(p, *args, **kwargs):
        fields = list(real_stat(p, *args, **kwargs))
        fields[6] = 8  # st_size
        return os.stat_result(fields)

    monkeypatch.setattr(files.os, "stat", says_small)
    with pytest.raises(LayerwiseError, match="grew over the 16 bytes an image file may have") as e:
        files.read_png(path)
    one_line(e)


# ---------------------------------------------------------------- the report reads only its run folders


def analyze_folder(path: Path) -> Path:
    path.mkdir()
    (path / "results.json").write_text(json.dumps({"command": "analyze", "layers": [0, 1], "accuracy": [0.5, 0.75]}))
    (path / "curves.png").write_bytes(PNG)
    return path


def secret_png(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG + SECRET.encode())
    return secret


def assert_no_secret(page: str, *contents: bytes) -> None:
    assert SECRET not in page
    for content in contents:
        assert base64.b64encode(content).decode() not in page


def test_report_leaves_out_pngs_that_lead_outside_or_are_no_png(tmp_path):
    run = analyze_folder(tmp_path / "run")
    secret = secret_png(tmp_path)
    (run / "x.png").symlink_to("/etc/passwd")
    (run / "y.png").symlink_to(secret)
    (run / "z.png").symlink_to("/dev/zero")
    fifo(run / "w.png")
    (run / "v.png").write_text("not a png")
    page = render([run])
    assert_no_secret(page, Path("/etc/passwd").read_bytes(), secret.read_bytes())
    assert base64.b64encode(PNG).decode() in page  # the folder's own figure is embedded
    for name, why in (("x.png", "leads outside"), ("y.png", "leads outside"), ("z.png", "leads outside"),
                      ("w.png", "FIFO"), ("v.png", "not a PNG")):
        assert f"{name} is left out:" in page and why in page


def test_report_refuses_a_results_file_outside_the_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps({"command": "analyze", "layers": [0], "secret": SECRET}))
    (run / "results.json").symlink_to(outside)
    with pytest.raises(LayerwiseError, match="leads outside") as e:
        render([run])
    one_line(e)


def test_reproduce_json_cannot_name_files_outside_its_folder(tmp_path):
    folder = tmp_path / "repro"
    folder.mkdir()
    secret = secret_png(tmp_path)
    analyze_folder(tmp_path / "elsewhere")
    step = analyze_folder(folder / "step")
    (step / "p.png").symlink_to(secret)
    entry = {"figure": "5", "title": "t", "claim": "c", "budget": "cpu",
             "shows": ["/etc/passwd", str(secret), "../secret.png", "step/../../secret.png", "step/curves.png"],
             "steps": [{"name": "out", "command": "analyze", "folder": str(tmp_path / "elsewhere")},
                       {"name": "up", "command": "analyze", "folder": "../elsewhere"},
                       {"name": "ok", "command": "analyze", "folder": "step"}]}
    (folder / "reproduce.json").write_text(json.dumps({"figures": {"5": entry}}))
    page = render([folder])
    assert_no_secret(page, Path("/etc/passwd").read_bytes(), secret.read_bytes())
    assert page.count("left out:") >= 6  # four shows, two steps (and the step's own symlink)
    assert base64.b64encode(PNG).decode() in page  # step/curves.png, inside the folder


def test_reproduce_json_naming_paths_with_nul_bytes(tmp_path):
    (tmp_path / "reproduce.json").write_text(json.dumps({"shows": ["a\u0000b.png"], "steps": [{"folder": "s\u0000"}]}))
    page = render([tmp_path])  # no ValueError from the path functions
    assert "left out: &#39;" in page and "cannot be resolved" in page  # the step; a missing show is skipped


def test_report_of_a_fifo_results_file_is_one_line_on_the_command_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    fifo(run / "results.json")
    proc = subprocess.run([*CLI, "report", str(run), "--out", str(tmp_path / "r.html")], capture_output=True,
                          text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "FIFO" in lines[0]


# ---------------------------------------------------------------- JSON of the wrong shape


@pytest.mark.parametrize("content, key", [
    ([1, 2], "JSON array, not an object"),
    ({"command": "analyze", "layers": ["a"]}, "layers.0"),
    ({"command": "analyze", "config": "x"}, "config"),
    ({"command": "exit", "models": {"a": 1}}, "models"),
    ({"command": "exit", "models": [{"per_layer_accuracy": ["high"]}]}, "models.0.per_layer_accuracy.0"),
    ({"command": "connect", "modes": {"single": []}}, "modes.single"),
    ({"command": "lpft", "recipes": {"lp": {"feature_change": {"relative": "x"}}}}, "recipes.lp.feature_change"),
    ({"command": "gen-eval", "warnings": "w"}, "warnings"),
])
def test_results_of_the_wrong_shape_name_the_file_and_key(tmp_path, content, key):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(content))
    with pytest.raises(LayerwiseError) as e:
        render([run])
    message = one_line(e)
    assert key in message and "results.json" in message


@pytest.mark.parametrize("content, key", [([], "JSON array, not an object"), ({"figures": []}, "figures"),
                                          ({"figures": {"5": {"steps": {}}}}, "figures.5.steps"),
                                          ({"steps": [{"folder": 3}]}, "steps.0.folder"),
                                          ({"shows": "a.png"}, "shows")])
def test_reproduce_json_of_the_wrong_shape_names_the_key(tmp_path, content, key):
    (tmp_path / "reproduce.json").write_text(json.dumps(content))
    with pytest.raises(LayerwiseError) as e:
        render([tmp_path])
    message = one_line(e)
    assert key in message and "reproduce.json" in message


def test_reproduce_marks_and_record_of_the_wrong_shape(tmp_path):
    step = Step(name="a", command="analyze")
    budget: Budget = "cpu"
    (tmp_path / ".reproduce").mkdir()
    mark = tmp_path / ".reproduce" / "a.json"
    for content, key in (({"settings": []}, "settings"), ({"seconds": 1}, "settings"),
                         ({"settings": {}, "seconds": "1"}, "seconds"), ([], "not a JSON object")):
        mark.write_text(json.dumps(content))
        with pytest.raises(LayerwiseError) as e:
            finished(tmp_path, step, budget)
        assert key in one_line(e) and "a.json" in str(e.value)
    mark.write_text('{"settings": {"comm')  # cut short by a kill: the step runs again
    assert finished(tmp_path, step, budget) is None
    (tmp_path / "reproduce.json").write_text(json.dumps({"figures": ["5"]}))
    with pytest.raises(LayerwiseError, match="figures") as e:
        update_record(tmp_path, {"figure": "5"})
    one_line(e)


# ---------------------------------------------------------------- tokenizer and model checked together


def gpt2_folder(path: Path, vocab: int) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    from layerwise.checkpoints.hf import quiet_transformers

    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=vocab, bos_token_id=0,
                        eos_token_id=0)
    with quiet_transformers():
        GPT2LMHeadModel(config).save_pretrained(str(path))
    return path


def test_save_pretrained_gpt2_without_tokenizer_files_uses_the_byte_tokenizer(tmp_path):
    from layerwise.checkpoints import load_model
    from layerwise.data import ByteTokenizer
    from layerwise.inference.generation import generate_text

    bundle = load_model(str(gpt2_folder(tmp_path / "gpt2", 300)))
    assert isinstance(bundle.inputs.tokenizer, ByteTokenizer)
    assert len(generate_text(bundle.stack, bundle.inputs.tokenizer, ["hello"], max_new_tokens=2)) == 1
    with pytest.raises(LayerwiseError, match="no tokenizer files .* 100 rows, fewer than the 257") as e:
        load_model(str(gpt2_folder(tmp_path / "small", 100)))
    one_line(e)


def test_tokenizer_larger_than_the_embedding_or_malformed_is_refused(tmp_path):
    from layerwise.checkpoints import load_model
    from layerwise.data.tokenizer import train_bpe

    folder = gpt2_folder(tmp_path / "gpt2", 257)
    tokenizer = train_bpe(["hello world, hello there"] * 20, 270)
    assert len(tokenizer) > 257
    tokenizer.save_pretrained(str(folder))
    with pytest.raises(LayerwiseError, match=f"has {len(tokenizer)} tokens but the model's embedding has 257") as e:
        load_model(str(folder))
    one_line(e)
    for content, key in (([], "not an object"), ({"model": []}, "model"), ({"model": {"vocab": {"a": "x"}}},
                                                                           "model.vocab")):
        (folder / "tokenizer.json").write_text(json.dumps(content))
        with pytest.raises(LayerwiseError, match="tokenizer.json") as e:
            load_model(str(folder))
        assert key in one_line(e)


@pytest.mark.parametrize("name", ["vocab.json", "model.safetensors", "pytorch_model.bin"])
def test_a_fifo_in_a_model_folder_is_refused_before_transformers_opens_it(tmp_path, name):
    from layerwise.checkpoints import load_model

    folder = gpt2_folder(tmp_path / "gpt2", 300)
    (folder / name).unlink(missing_ok=True)
    fifo(folder / name)
    with pytest.raises(LayerwiseError, match=f"{name} is a FIFO") as e:
        load_model(str(folder))
    one_line(e)


# ---------------------------------------------------------------- rows and labels


@pytest.mark.parametrize("name, text, match", [
    ("labels.jsonl", '{"text": "a", "label": 100000000000000000000000000000}\n', "label a number that large"),
    ("labels.csv", "text,label\na,1000000000\n", "label 1000000000: labels are class indices"),
    ("labels.csv", "text,label\na,1e29\n", "no integer label"),
    ("labels.tsv", "text\tscore\na\t1e29\n", "score 1e\\+29, beyond"),
    ("labels.jsonl", '{"text": "a", "score": 1e400}\n', "no real-valued score"),
    ("rows.jsonl", '{"text": "a", "label": 0}\n{"label": 1}\n', "line 2 has no 'text' field"),
    ("rows.jsonl", '{"text": "a", "label": 0}\n{"text": 5, "label": 1}\n', "line 2 has a JSON number as its 'text'"),
    ("rows.jsonl", '{"text": ["a"], "label": 0}\n', "line 1 has a JSON array"),
    ("rows.jsonl", '{"text": null, "label": 0}\n', "line 1 has a JSON null"),
    ("pairs.jsonl", '{"premise": "a", "hypothesis": {}, "label": 0}\n', "'hypothesis' text"),
])
def test_absurd_labels_and_malformed_rows_name_the_row(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(LayerwiseError, match=match) as e:
        load_table(path, "all")
    one_line(e)


def test_a_csv_field_longer_than_pythons_default_limit_is_read(tmp_path):
    long = "word " * 60_000  # 300,000 characters; csv's default field limit is 131,072
    path = tmp_path / "long.csv"
    path.write_text(f'text,label\n"{long}",1\nshort,0\n')
    ds = load_table(path, "all")
    assert ds.texts[0] == long.strip() and ds.labels.tolist() == [1, 0]
    tsv = tmp_path / "long.tsv"
    tsv.write_text(f"sentence\tlabel\n{long}\t1\nshort\t0\n")
    assert load_table(tsv, "all").texts[0] == long.strip()


def test_a_corpus_file_whose_name_holds_a_colon_is_not_read_as_a_split(tmp_path, monkeypatch):
    from layerwise.checkpoints.new import corpus_texts

    monkeypatch.chdir(tmp_path)
    Path("notes:v2.txt").write_text("some text to learn from")
    assert corpus_texts(["notes:v2.txt"]) == ["some text to learn from"]
    assert corpus_texts([str(tmp_path / "notes:v2.txt")]) == ["some text to learn from"]
    assert split_spec("wikitext2:valid") == ("wikitext2", "valid")
    assert split_spec("hf:imdb") == ("hf:imdb", None)
    assert split_spec("hf:imdb:train") == ("hf:imdb", "train")
    assert split_spec("missing:v2.txt") == ("missing:v2.txt", None)
    with pytest.raises(LayerwiseError, match="missing:v2.txt not found"):
        corpus_texts(["missing:v2.txt"])
