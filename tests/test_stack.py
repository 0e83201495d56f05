"""The layer stack against the wrapped models' own forward passes."""

import _refs as ref
import pytest
import torch
import torch.nn.functional as F
import transformers as T

from layerwise import LayerwiseError
from layerwise.models import GPT, MLP, GPTConfig, MLPConfig, ViT, ViTConfig
from layerwise.stack import ADAPTERS, LayerStack, pool, register_adapter

torch.manual_seed(0)
IDS = torch.randint(5, 90, (3, 7))
MASK = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
PIXELS = torch.randn(3, 3, 16, 16)
SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)


def _models():
    yield "bert-cls", T.BertForSequenceClassification(T.BertConfig(vocab_size=100, num_labels=3, **SMALL)), \
        dict(input_ids=IDS, attention_mask=MASK), lambda o: o.logits
    yield "bert", T.BertModel(T.BertConfig(vocab_size=100, **SMALL)), \
        dict(input_ids=IDS, attention_mask=MASK), lambda o: o.last_hidden_state[:, 0]
    yield "gpt2", T.GPT2LMHeadModel(T.GPT2Config(vocab_size=100, n_embd=32, n_layer=3, n_head=4, n_positions=16,
                                                 bos_token_id=1, eos_token_id=1)), \
        dict(input_ids=IDS, attention_mask=MASK), lambda o: o.logits
    yield "llama", T.LlamaForCausalLM(T.LlamaConfig(vocab_size=100, num_key_value_heads=2, max_position_embeddings=32,
                                                    **SMALL)), \
        dict(input_ids=IDS, attention_mask=MASK), lambda o: o.logits
    yield "vit", T.ViTForImageClassification(T.ViTConfig(image_size=16, patch_size=4, num_labels=5, **SMALL)), \
        dict(pixel_values=PIXELS), lambda o: o.logits
    yield "deit", T.DeiTForImageClassification(T.DeiTConfig(image_size=16, patch_size=4, num_labels=5, **SMALL)), \
        dict(pixel_values=PIXELS), lambda o: o.logits
    yield "own-vit", ViT(ViTConfig(image_size=16, dim=32, depth=3, heads=4, num_classes=5)), \
        dict(pixel_values=PIXELS), lambda o: o
    yield "own-gpt", GPT(GPTConfig(dim=32, depth=3, heads=4)), dict(input_ids=IDS), lambda o: o
    for residual in (True, False):
        yield f"mlp-{residual}", MLP(MLPConfig(input_dim=12, dim=16, depth=3, residual=residual)), \
            dict(inputs=torch.randn(5, 12)), lambda o: o


MODELS = list(_models())


@pytest.mark.parametrize("name,model,inputs,own_output", MODELS, ids=[m[0] for m in MODELS])
def test_stack_reproduces_model_output(name, model, inputs, own_output):
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stack = LayerStack(model)
    with torch.no_grad():
        reference = own_output(model(**inputs))
        ours = stack(inputs)
    assert stack.num_layers == 3  # every model above has three blocks
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max().item() < 1e-5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights untouched


@pytest.mark.parametrize("name", ["bert-cls", "gpt2", "llama", "vit"])
def test_hidden_states_match_hf(name):
    _, model, inputs, _ = next(m for m in MODELS if m[0] == name)
    model.eval()
    with torch.no_grad():
        hf = model(**inputs, output_hidden_states=True).hidden_states
        ours = LayerStack(model).hidden_states(inputs)
    assert len(ours) == len(hf)
    # HF normalises its last entry for GPT-2/Llama/ViT (final norm folded in); the blocks before are raw
    for mine, theirs in zip(ours[:-1], hf[:-1]):
        assert torch.allclose(mine, theirs, atol=1e-5)


@pytest.mark.parametrize("name", ["bert-cls", "gpt2", "llama"])
def test_compaction_equals_running_the_subset(name):
    """state.select(rows) after a block gives what running only those rows from the start gives."""
    _, model, inputs, _ = next(m for m in MODELS if m[0] == name)
    model.eval()
    stack = LayerStack(model)
    rows = torch.tensor([2, 0])
    with torch.no_grad():
        state = stack.block(0, stack.embed(inputs)).select(rows)
        for i in range(1, stack.num_layers):
            state = stack.block(i, state)
        compacted = stack.readout(state.h, state.mask)
        direct = stack({k: v[rows] for k, v in inputs.items()})
    assert torch.allclose(compacted, direct, atol=1e-5)


def test_readout_recomputes_final_norm_per_layer():
    """TransformerLens #1076: the final LayerNorm must use layer ℓ's own statistics."""
    model = ViT(ViTConfig(image_size=16, dim=32, depth=3, heads=4, num_classes=5)).eval()
    stack = LayerStack(model)
    with torch.no_grad():
        hs = stack.hidden_states(dict(pixel_values=PIXELS))
        norm, head = model.norm, model.head
        for h in hs:
            expected = ref.linear64(ref.layer_norm64(h[:, 0], norm.weight, norm.bias, norm.eps), head.weight, head.bias)
            assert torch.allclose(stack.readout(h).double(), expected, atol=1e-5)


def test_pooling():
    h = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])  # right and left padding
    assert torch.equal(pool(h, mask, "cls"), h[:, 0])
    assert torch.equal(pool(h, mask, "last"), torch.stack([h[0, 1], h[1, 3]]))
    assert torch.allclose(pool(h, mask, "mean"), torch.stack([h[0, :2].mean(0), h[1, 1:].mean(0)]))
    with pytest.raises(LayerwiseError, match="unknown pooling"):
        pool(h, mask, "max")


def test_unsupported_model_names_supported_ones():
    with pytest.raises(LayerwiseError, match="supported are .*BertModel.*register_adapter"):
        LayerStack(torch.nn.Linear(3, 3))


def test_register_adapter_for_new_architecture():
    from layerwise.stack import Readout, StackParts, StackState

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.layers, self.out = torch.nn.Linear(4, 8), torch.nn.ModuleList(
                torch.nn.Linear(8, 8) for _ in range(2)), torch.nn.Linear(8, 3)

        def forward(self, x):
            h = self.inp(x)
            for layer in self.layers:
                h = h + layer(h)
            return self.out(h)

    @register_adapter("Toy", lambda m: isinstance(m, Toy))
    def toy(m):
        return StackParts(embed=lambda inp: StackState(h=m.inp(inp["x"]).unsqueeze(1)), blocks=m.layers,
                          readout=Readout(None, m.out, "cls"), task="classification", feature_pooling="cls",
                          hidden_size=8, call_block=lambda b, s: s.h + b(s.h))

    try:
        model, x = Toy(), torch.randn(5, 4)
        assert torch.allclose(LayerStack(model)(dict(x=x)), model(x), atol=1e-6)
    finally:
        ADAPTERS[:] = [a for a in ADAPTERS if a.name != "Toy"]


def test_layer_out_of_range():
    stack = LayerStack(MLP(MLPConfig(input_dim=4, dim=8, depth=2)))
    with pytest.raises(LayerwiseError, match="out of range"):
        stack(dict(inputs=torch.randn(2, 4)), upto=3)


def test_timm_vit_if_installed():
    timm = pytest.importorskip("timm", reason="timm not installed (it needs torchvision)")
    for pool_kind in ("token", "avg"):
        model = timm.models.vision_transformer.VisionTransformer(
            img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=5, global_pool=pool_kind).eval()
        with torch.no_grad():
            assert (LayerStack(model)(dict(pixel_values=PIXELS)) - model(PIXELS)).abs().max() < 1e-5


def test_packaged_minilm_reproduces_sentence_embedding():
    from layerwise.checkpoints import load_model

    bundle = load_model("minilm")
    tok = bundle.inputs.tokenizer
    batch = tok(["a fine film", "the plot is thin and the acting worse"], padding=True, return_tensors="pt")
    bundle.model.eval()
    with torch.no_grad():
        out = bundle.model(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).float()
        reference = (out * m).sum(1) / m.sum(1)  # sentence-transformers' mean pooling
        ours = bundle.stack(dict(batch))
    assert bundle.stack.num_layers == 6 and bundle.stack.hidden_size == 384
    assert bundle.stack.feature_pooling == "mean"
    assert (ours - reference).abs().max() < 1e-5
    assert F.cosine_similarity(ours, reference).min() > 0.99999
