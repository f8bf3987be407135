"""Tiny transformers models and tokenizers built in-process (nothing is downloaded).

Reusable by any test that needs a reference: `tiny_hf_model` builds a random model of one family
with every weight (norms and biases included) perturbed so that a wrong mapping shows in the
logits; `hf_logits` runs it on a left-padded batch; the `*_style_tokenizer` functions build small
tokenizers with each family's special tokens and a chat template, saved with ``save_pretrained``.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import torch
import transformers

from score_jax.checkpoints import hf

# Small models of each family; sizes divide an 8-device mesh on every sharded axis.
_COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
)
HF_CONFIGS = {
    "gemma": dict(_COMMON, num_hidden_layers=2, num_key_value_heads=1),
    # Sliding window (4) shorter than the test sequences, and softcaps small enough to bend the logits.
    "gemma2": dict(
        _COMMON,
        num_hidden_layers=4,
        sliding_window=4,
        query_pre_attn_scalar=24,
        attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
    ),
    # Llama 3 scaling with a short original context, so every frequency band is exercised.
    "llama": dict(
        _COMMON,
        num_hidden_layers=2,
        rms_norm_eps=1e-5,
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=500_000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=16,
        ),
    ),
    "qwen2": dict(_COMMON, num_hidden_layers=2, rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0)),
    "qwen3": dict(_COMMON, num_hidden_layers=2, rope_parameters=dict(rope_type="default", rope_theta=1_000_000.0)),
    # Window (4) shorter than the test sequences; layers local, local, global, local; each kind with
    # its own RoPE, the global one linearly scaled as in Gemma 3 4B and up.
    "gemma3": dict(
        _COMMON,
        num_hidden_layers=4,
        sliding_window=4,
        query_pre_attn_scalar=24,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters=dict(
            full_attention=dict(rope_type="linear", factor=8.0, rope_theta=1_000_000.0),
            sliding_attention=dict(rope_type="default", rope_theta=10_000.0),
        ),
    ),
}
_CONFIG_CLASSES = {
    "gemma": "GemmaConfig",
    "gemma2": "Gemma2Config",
    "gemma3": "Gemma3TextConfig",
    "llama": "LlamaConfig",
    "qwen2": "Qwen2Config",
    "qwen3": "Qwen3Config",
}


def tiny_hf_model(family: str, tied: bool | None = None, seed: int = 0, **config_overrides) -> torch.nn.Module:
    """A random fp32 transformers causal LM of `family` (eager attention, eval mode).

    Linear weights are N(0, 1/fan_in); norm scales and biases get N(0, 0.2) noise, so each tensor
    matters to the output.
    """
    kwargs = dict(HF_CONFIGS[family], **config_overrides)
    if tied is not None:
        kwargs["tie_word_embeddings"] = tied
    config = getattr(transformers, _CONFIG_CLASSES[family])(**kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, hf.ARCHITECTURES[family])(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim == 2:
                p.copy_(noise * p.shape[1] ** -0.5)
            elif "norm" in name and "gemma" not in family:  # w multiplies: keep it near 1
                p.copy_(1.0 + 0.2 * noise)
            else:  # gemma norms (1 + w), biases
                p.copy_(0.2 * noise)
    model.config._attn_implementation = "eager"
    return model.eval()


def save_tiny_hf_checkpoint(
    path: str,
    family: str,
    tied: bool | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | None = None,
    **config_overrides,
) -> torch.nn.Module:
    """Builds `tiny_hf_model` and saves it (safetensors) to `path`; returns the fp32 model."""
    model = tiny_hf_model(family, tied, seed, **config_overrides)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.to(dtype).save_pretrained(path, **kwargs)
    return model.to(torch.float32)


def load_hf_model(path: str) -> torch.nn.Module:
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def left_padded_batch(vocab_size: int, lengths: list[int], seq_len: int, seed: int = 0):
    """(tokens [B,T] int32, valid [B,T] bool, positions [B,T] int32): rows right-aligned, pad id 0."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab_size, size=(len(lengths), seq_len)).astype(np.int32)
    valid = np.arange(seq_len)[None, :] >= (seq_len - np.asarray(lengths))[:, None]
    tokens = np.where(valid, tokens, 0).astype(np.int32)
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)
    return tokens, valid, positions


def hf_logits(model: torch.nn.Module, tokens: np.ndarray, valid: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """float32 logits [B,T,V] with an explicit attention mask and position ids."""
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(tokens, dtype=torch.long),
            attention_mask=torch.as_tensor(valid, dtype=torch.long),
            position_ids=torch.as_tensor(positions, dtype=torch.long),
            use_cache=False,
        )
    return out.logits.float().numpy()


# ---------------------------------------------------------------------------------------------
# Tokenizers with each family's special tokens and chat template.

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 2 + 3? The answer is 5.",
    "Let me check my work again, carefully. I made a mistake.",
    "Solve for x: 3x + 1 = 10, so x = 3.",
    "Hello world! This is a tiny tokenizer for user and model turns.",
    "def add(a, b):\n    return a + b\n",
]

# Written for these tests; each renders the family's published format for user/assistant turns.
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Llama 3.1 / 3.2 Instruct: a dated system turn first, whatever the messages.
LLAMA31_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set today = date_string if date_string is defined else '26 Jul 2024' %}"
    "{{ '<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ' + today"
    " + '\n\n<|eot_id|>' }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + m['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
QWEN2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Gemma 3's template: a system message, if any, prefixes the first user turn.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set prefix = messages[0]['content'] + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for m in loop_messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') + m['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
# Qwen3's (hybrid thinking) template without its tool-calling branches: no default system turn;
# a reply after the last user turn gets a <think> block (empty if it has none), earlier replies
# lose theirs; the generation prompt holds an empty one when enable_thinking is false.
QWEN3_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{% endif %}{% set ns = namespace(last_query_index=messages|length - 1) %}"
    "{% for m in messages %}{% if m['role'] == 'user' %}{% set ns.last_query_index = loop.index0 %}{% endif %}"
    "{% endfor %}{% for m in messages %}{% set content = m['content'] %}"
    "{% if m['role'] == 'user' or (m['role'] == 'system' and not loop.first) %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + content + '<|im_end|>\n' }}"
    "{% elif m['role'] == 'assistant' %}{% set reasoning = '' %}{% if '</think>' in content %}"
    "{% set reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}"
    "{% set content = content.split('</think>')[-1].lstrip('\n') %}{% endif %}"
    "{% if loop.index0 > ns.last_query_index and (loop.last or reasoning) %}"
    "{{ '<|im_start|>assistant\n<think>\n' + reasoning.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}"
    "{% else %}{{ '<|im_start|>assistant\n' + content }}{% endif %}{{ '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}"
)


def _byte_level_bpe(special_tokens: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special_tokens,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def llama3_style_tokenizer(
    directory: str, chat_template: str = LLAMA3_CHAT_TEMPLATE
) -> transformers.PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer with Llama 3's special tokens and chat format, saved to `directory`."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_bpe(specials),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        chat_template=chat_template,
    )
    tok.save_pretrained(directory)
    return tok


def qwen2_style_tokenizer(
    directory: str, chat_template: str = QWEN2_CHAT_TEMPLATE, added: tuple[str, ...] = ()
) -> transformers.PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer with ChatML tokens, `added` plain tokens (Qwen3's <think>, </think>)
    and Qwen2.5's template (default system turn) or `chat_template`, saved to `directory`."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_bpe(specials),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
    )
    tok.add_tokens(list(added))
    tok.save_pretrained(directory)
    return tok


def gemma_sentencepiece_model(path: str) -> str:
    """Trains a tiny SentencePiece BPE model set up like Gemma's; returns the ``.model`` path."""
    import sentencepiece as spm

    prefix = os.path.join(os.path.dirname(path), "_sp_train")
    corpus = prefix + ".txt"
    with open(corpus, "w") as f:
        f.write("\n".join(CORPUS * 4))
    spm.SentencePieceTrainer.train(
        input=corpus,
        model_prefix=prefix,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        add_dummy_prefix=False,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        minloglevel=2,
    )
    shutil.move(prefix + ".model", path)
    os.remove(prefix + ".vocab")
    os.remove(corpus)
    return path


def gemma_style_tokenizer(
    directory: str, chat_template: str = GEMMA_CHAT_TEMPLATE
) -> transformers.PreTrainedTokenizerBase:
    """Gemma's layout: ``tokenizer.model`` (SentencePiece) plus the transformers files converted from it."""
    os.makedirs(directory, exist_ok=True)
    gemma_sentencepiece_model(os.path.join(directory, "tokenizer.model"))
    tok = transformers.GemmaTokenizer.from_pretrained(directory)
    tok.chat_template = chat_template
    tok.save_pretrained(directory)
    return tok


def chat_ids(
    tok: transformers.PreTrainedTokenizerBase, turns: list[str], add_generation_prompt: bool, **template_kwargs
) -> list[int]:
    """`apply_chat_template` ids for alternating user/assistant `turns` (`template_kwargs`: e.g. enable_thinking)."""
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    out = tok.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt, **template_kwargs
    )
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)
