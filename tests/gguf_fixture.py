"""A tiny Llama written as a GGUF file, so tests can exercise transformers' GGUF loading path.

The file mirrors what llama.cpp's `convert_hf_to_gguf.py` produces for a Llama model with a
"gpt2"-type (byte-level BPE) tokenizer, in F32 so that loading it back is exact:

    source = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf")
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM

# Listed first so they get ids 0, 1, 2, as in SmolLM2.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML, as SmolLM2-Instruct uses, minus its default system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! This is a tiny tokenizer for tests.",
    "Models are loaded from GGUF files written by llama.cpp.",
    "What is the capital of France? Paris is the capital of France.",
]


def _train_tokenizer(vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    # GPT-2's pre-tokenizer, which transformers restores for tokenizer.ggml.pre == "gpt-2"
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # all 256 bytes, so any text round-trips however little the corpus covers
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


def _permute(weights, n_head: int):
    # llama.cpp's `LlamaModel.permute`: it interleaves the rotary halves of each head, and
    # transformers' `LlamaTensorProcessor` undoes exactly this on load.
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_tiny_llama_gguf(path: Path, *, seed: int = 0) -> LlamaForCausalLM:
    """Write a tiny Llama (2 layers, hidden 16) with a tiny BPE tokenizer and chat template as a GGUF file
    at `path`; return the source model (fp32, eval mode)."""
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer()
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.__getitem__)
    # `tokenizers` exposes merges only through its JSON, as pairs; GGUF wants "a b" strings
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    ids = {token: vocab[token] for token in SPECIAL_TOKENS}

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|im_end|>"],
    )
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    head_dim = config.hidden_size // config.num_attention_heads

    writer = gguf.GGUFWriter(path, arch="llama")
    # a name containing "mistral" would make transformers load the file as Mistral
    writer.add_name("tiny-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    # transformers reads this back as head_dim
    writer.add_rope_dimension_count(head_dim)

    # The tokenizer as llama.cpp's `get_vocab_base` + `SpecialVocab` write a byte-level BPE vocabulary.
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    # CONTROL makes transformers keep the special tokens whole instead of splitting them
    control, normal = gguf.TokenType.CONTROL, gguf.TokenType.NORMAL
    writer.add_token_types([control if t in ids else normal for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids["<|im_start|>"])
    writer.add_eos_token_id(ids["<|im_end|>"])
    writer.add_unk_token_id(ids["<|endoftext|>"])
    writer.add_pad_token_id(ids["<|im_end|>"])
    # ChatML models get their markers from the template, not from an added BOS
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    # The same HF -> GGUF name table transformers inverts when loading.
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp omits output.weight when tied; its absence is what signals tying
        data = tensor.detach().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, config.num_key_value_heads)
        writer.add_tensor(name_map.get_name(hf_name, try_suffixes=(".weight",)), data)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def tiny_model(folder):
    """Load the converted tiny Llama with varied weights and a head that only emits printable ASCII."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    generator = torch.Generator().manual_seed(0)
    printable = set(string.ascii_letters + " .,?!")
    words = [tokenizer.decode([i]) for i in range(model.config.vocab_size)]
    allowed = torch.tensor([bool(w) and set(w) <= printable for w in words])
    with torch.no_grad():
        for name, weights in model.named_parameters():
            if "norm" not in name:
                weights.normal_(0, 1.0, generator=generator)
        head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
        head.weight.copy_(model.lm_head.weight)
        head.bias.copy_(torch.where(allowed, 0.0, -1e4))
    model.lm_head = head
    return model, tokenizer
