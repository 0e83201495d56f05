"""``gen-eval``: text generated from every layer of one or more language models after corpus prompts, scored per
layer (next-token accuracy, perplexity, coherence, diversity; the AlignedGPT paper's Figure 8), beside the same
scores of the corpus's own continuation (results.json, layers.csv, generation.png, samples.txt)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from layerwise.commands.common import CommandOptions, Folder
from layerwise.parallel import open_folder, rank0
from layerwise.errors import LayerwiseError

if TYPE_CHECKING:
    from layerwise.checkpoints import ModelBundle
    from layerwise.data import LayerwiseDataset
    from layerwise.evaluation.generation_metrics import Embedder
    from layerwise.evaluation.prompts import GenEvalSettings, Prompts

OUTPUTS = ("results.json", "layers.csv", "generation.png", "samples.txt")
CONVENTIONS = ("tokens", "words", "simctg")  # evaluation.generation_metrics.CONVENTIONS (not imported: torch)


class GenEvalOptions(CommandOptions):
    """The options of ``gen-eval`` (the decoding checks its own parameters)."""

    model: Annotated[list[str], Field(min_length=1)]  # language models, compared on the same prompts
    data: str = "wikitext2"  # text corpus: wikitext2, tinyshakespeare or a .txt file
    split: str = "test"
    out: Folder = Path("runs/gen-eval")
    num_prompts: PositiveInt = 100
    prefix_len: PositiveInt = 32  # prompt length in the model's tokens
    max_new_tokens: PositiveInt = 128  # continuation length in tokens (also the reference's)
    decoding: str = "nucleus"  # greedy | sample | nucleus | top-k | contrastive
    top_p: float = 0.95
    top_k: int | None = None
    temperature: float = 1.0
    alpha: float = 0.6  # contrastive search's degeneration penalty α
    batch_size: PositiveInt = 16  # prompts generated together
    eval_batch_size: PositiveInt = 16  # blocks per batch when scoring accuracy and perplexity
    seq_len: PositiveInt | None = None  # tokens per scoring block [min(128, context)]
    limit: PositiveInt | None = None  # score accuracy/perplexity on this many blocks (seeded)
    layer_zero: bool = False  # also generate from layer 0 (the embeddings)
    embedder: str = "minilm"  # coherence embedder
    diversity: Literal[CONVENTIONS] = "words"  # type: ignore[valid-type]
    samples: NonNegativeInt = 3  # prompts whose continuations go to samples.txt
    seed: int = 0
    device: str = "auto"
    data_dir: Folder | None = None
    lens: list[str] = ["logit"]  # how each layer is read: logit | tuned:DIR, one for every model or one per model
    overwrite: bool = False


def check_model(bundle: ModelBundle, settings: GenEvalSettings) -> int:
    """A language model with a tokenizer whose context holds prefix + continuation and the scoring blocks;
    returns the scoring block length."""
    from layerwise.inference.generation import check_generation

    stack = bundle.stack
    check_generation(stack, stack.num_layers, [[0] * settings.prefix_len], settings.max_new_tokens)
    if bundle.inputs.tokenizer is None:
        raise LayerwiseError(f"{bundle.name} has no tokenizer: save one beside the model to generate text")
    context = stack.context_length
    seq_len = settings.seq_len or min(128, context or 128)
    if context is not None and seq_len > context:
        raise LayerwiseError(f"scoring blocks of {seq_len} tokens exceed {bundle.name}'s context of {context}: "
                             "use shorter blocks")
    return seq_len


def generate_layer(bundle: ModelBundle, prompts: Prompts, layer: int, decoding,
                   settings: GenEvalSettings, bar=None, lens=None) -> list[list[int]]:
    """Continuations (token ids, up to and including EOS) of every prompt from ``layer``, in batches; batch i is
    sampled with seed + i, so a run is reproducible whatever else runs. Under a launcher each process generates
    its contiguous run of batches (the same batches and seeds) and the rows are gathered in prompt order."""
    from layerwise.inference.generation import generate
    from layerwise.parallel import gather_list, shard_list

    tok = bundle.inputs.tokenizer
    eos, pad = getattr(tok, "eos_token_id", None), getattr(tok, "pad_token_id", None)
    out: list[list[int]] = []
    for i in shard_list(range(0, len(prompts.prefix_ids), settings.batch_size)):
        batch = prompts.prefix_ids[i:i + settings.batch_size]
        generated = generate(bundle.stack, batch, layer, decoding=decoding, max_new_tokens=settings.max_new_tokens,
                             eos_token_id=eos, pad_token_id=pad if pad is not None else 0,
                             seed=settings.seed + i // settings.batch_size, lens=lens)
        out.extend(generated.rows())
        if bar is not None:
            bar.update(len(batch))
    return gather_list(out)


def lm_scores(bundle: ModelBundle, ds: LayerwiseDataset, seq_len: int, batch_size: int,
              device, lens=None) -> dict[str, list[float]]:
    """Per-layer next-token accuracy and perplexity of readout(hˡ), ℓ = 0..L, on the corpus cut into blocks of
    ``seq_len`` (``training.scores.evaluate_layers``: under a launcher, batches dealt round-robin to the processes
    and the float64 sums reduced)."""
    from tqdm.auto import tqdm

    from layerwise.data import make_loader
    from layerwise.parallel import rank, reduce_sum, speaks, world_size
    from layerwise.training.scores import evaluate_layers

    loader = make_loader(ds, bundle.inputs, batch_size, seq_len=seq_len)
    bar = tqdm(loader, desc=f"scoring {bundle.name}", unit="batch", leave=False, disable=not speaks())
    return evaluate_layers(bundle.stack, bar, device=device, rank=rank(), world=world_size(), reduce=reduce_sum,
                           lens=lens)


def model_report(bundle: ModelBundle, ds: LayerwiseDataset, offsets: Sequence[int], embedder: Embedder,
                   decoding, settings: GenEvalSettings, device, bar=None, lens=None) -> dict:
    """One model's Figure-8 numbers per layer, its reference scores, and sample continuations."""
    from layerwise.evaluation.generation_metrics import score_texts
    from layerwise.evaluation.prompts import decode, model_prompts

    seq_len = check_model(bundle, settings)
    tok = bundle.inputs.tokenizer
    prompts = model_prompts(tok, ds.text or "", offsets, settings)
    layers = list(range(0 if settings.layer_zero else 1, bundle.stack.num_layers + 1))
    lm = lm_scores(bundle, ds, seq_len, settings.eval_batch_size, device, lens)
    reference = score_texts(embedder, prompts.prefix_texts, prompts.reference_texts, prompts.reference_ids)
    per_layer, samples = [], {}
    for layer in layers:
        rows = generate_layer(bundle, prompts, layer, decoding, settings, bar, lens)
        texts = [decode(tok, r) for r in rows]
        per_layer.append(score_texts(embedder, prompts.prefix_texts, texts, rows))
        samples[layer] = texts[: settings.samples]
    conventions = reference["diversity"].keys()
    return {
        "model": bundle.name, "layers": layers, "num_layers": bundle.stack.num_layers,
        "accuracy": [lm["accuracy"][ell] for ell in layers], "perplexity": [lm["perplexity"][ell] for ell in layers],
        "coherence": [s["coherence"] for s in per_layer],
        "diversity": [s["diversity"][settings.diversity] for s in per_layer],
        "diversity_by_convention": {c: [s["diversity"][c] for s in per_layer] for c in conventions},
        "reference": {"coherence": reference["coherence"], "diversity": reference["diversity"][settings.diversity],
                      "diversity_by_convention": reference["diversity"]},
        "lm_eval": {"seq_len": seq_len, "blocks_limit": ds.limit},
        "samples": {"prefix": prompts.prefix_texts[: settings.samples],
                    "reference": prompts.reference_texts[: settings.samples],
                    "layers": {str(k): v for k, v in samples.items()}},
    }


def evaluate_generation(bundles: Sequence[ModelBundle], ds: LayerwiseDataset, embedder: Embedder, decoding,
                        settings: GenEvalSettings, device, lenses: Sequence | None = None) -> dict:
    """Every model checked and every prompt chosen before any generation; then each model in turn."""
    from tqdm.auto import tqdm

    from layerwise.evaluation.prompts import check_corpus, select_offsets
    from layerwise.parallel import speaks

    check_corpus(ds, settings.num_prompts)
    for bundle in bundles:
        check_model(bundle, settings)
    offsets = select_offsets(ds.text or "", [b.inputs.tokenizer for b in bundles], settings)
    total = sum(b.stack.num_layers + settings.layer_zero for b in bundles) * len(offsets)
    with tqdm(total=total, desc="generating", unit="prompt", leave=False, disable=not speaks()) as bar:
        models = [model_report(b, ds, offsets, embedder, decoding, settings, device, bar, lens)
                  for b, lens in zip(bundles, lenses or [None] * len(bundles))]
    return {"models": models, "prompt_offsets": list(offsets), "embedder": embedder.describe(),
            "diversity_convention": settings.diversity, **prompt_split(len(offsets), settings.batch_size)}


def prompt_split(n: int, batch_size: int) -> dict:
    """``world_size`` and the prompts each process generated from (``generate_layer``'s contiguous batches)."""
    from layerwise.parallel import rank, shard_bounds, split_record, world_size

    first, last = shard_bounds(-(-n // batch_size), rank(), world_size())
    return split_record(min(last * batch_size, n) - first * batch_size)


def run(options: GenEvalOptions) -> dict[str, Any]:
    """Generate from every layer and score it; write and return the results.

    Checked before any model is run: the options, ``out``, the decoding, the corpus and the number of prompts
    it allows, the embedder, and every model (a language model whose context holds prefix + continuation)."""
    o = options
    from layerwise.commands.lens import check_lenses

    lens_specs = check_lenses(o.lens, o.model)
    folder = open_folder(Path(o.out), "gen-eval", overwrite=o.overwrite, outputs=OUTPUTS)
    out = folder.path
    from layerwise.checkpoints import load_model  # after the checks: a bad option is answered without torch
    from layerwise.data import load_dataset
    from layerwise.device import pick_device
    from layerwise.evaluation.generation_metrics import Embedder
    from layerwise.evaluation.prompts import GenEvalSettings, check_corpus
    from layerwise.inference.decoding import make_decoding
    from layerwise.report.writers import write_gen_eval

    strategy = make_decoding(o.decoding, temperature=o.temperature, top_k=o.top_k, top_p=o.top_p, alpha=o.alpha)
    ds = load_dataset(o.data, split=o.split, limit=o.limit, seed=o.seed, data_dir=o.data_dir)
    check_corpus(ds, o.num_prompts)
    from layerwise.parallel import local_device

    dev = local_device(pick_device(o.device))
    scorer = Embedder(o.embedder, device=str(dev))
    from layerwise.stack import make_lens

    bundles, lenses = [], []
    for name, lens_spec in zip(o.model, lens_specs):
        bundle = load_model(name)
        bundle.model.to(dev).eval()
        bundles.append(bundle)
        lenses.append(make_lens(lens_spec, bundle.stack))
    settings = GenEvalSettings(num_prompts=o.num_prompts, prefix_len=o.prefix_len, max_new_tokens=o.max_new_tokens,
                               batch_size=o.batch_size, eval_batch_size=o.eval_batch_size, seq_len=o.seq_len,
                               layer_zero=o.layer_zero, diversity=o.diversity, seed=o.seed, samples=o.samples)
    results = evaluate_generation(bundles, ds, scorer, strategy, settings, dev, lenses)
    for m, name, lens_spec in zip(results["models"], o.model, lens_specs):
        m["model"], m["lens"] = name, lens_spec
    results["config"] = dict(models=list(o.model), data=o.data, split=o.split, num_prompts=o.num_prompts,
                             prefix_len=o.prefix_len, max_new_tokens=o.max_new_tokens, decoding=o.decoding,
                             top_p=o.top_p, top_k=o.top_k, temperature=o.temperature, alpha=o.alpha,
                             batch_size=o.batch_size, eval_batch_size=o.eval_batch_size, seq_len=o.seq_len,
                             limit=o.limit, layer_zero=o.layer_zero, embedder=o.embedder, diversity=o.diversity,
                             samples=o.samples, seed=o.seed, device=str(dev), lens=lens_specs)
    rank0(write_gen_eval, results, out)  # rank 0 alone writes; every process holds the same results
    rank0(folder.record)
    return results
