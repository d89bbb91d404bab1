"""The tiny GGUF fixture loads back through transformers' `gguf_file=` path unchanged."""

import pytest

# tests/ has no __init__.py, so pytest puts tests/ itself on sys.path
from gguf_fixture import write_tiny_llama_gguf

pytestmark = pytest.mark.model

import torch  # noqa: E402
import transformers  # noqa: E402

GGUF_NAME = "tiny-llama-f32.gguf"


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    source = write_tiny_llama_gguf(folder / GGUF_NAME, seed=0)
    return folder, source


def test_weights_and_logits_round_trip(gguf_dir):
    folder, source = gguf_dir
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME).eval()

    assert type(loaded) is type(source)
    assert loaded.config.tie_word_embeddings
    expected, actual = source.state_dict(), loaded.state_dict()
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert actual[name].dtype == torch.float32, name
        # exact, since the file is F32 and the q/k permutation is undone on load
        assert torch.equal(actual[name], tensor), name

    input_ids = torch.tensor([[1, 5, 42, 100, 7, 2, 250, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, source(input_ids).logits, rtol=1e-5, atol=1e-6)


def test_tokenizer_round_trip_and_chat_template(gguf_dir):
    folder, source = gguf_dir
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)

    assert len(tokenizer) == source.config.vocab_size
    assert tokenizer.eos_token == "<|im_end|>"
    text = "Hello world, ünïcödé and numbers 12345 are fine!"
    ids = tokenizer.encode(text)
    assert max(ids) < source.config.vocab_size
    assert tokenizer.decode(ids) == text
    # special tokens stay whole rather than being split into bytes
    assert tokenizer.encode("<|im_start|>")[-1] == tokenizer.convert_tokens_to_ids("<|im_start|>")

    messages = [{"role": "user", "content": "Hi there"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    chat_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert chat_ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 2
