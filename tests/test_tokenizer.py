"""Tokenizers: round trips, special tokens, and chat templates token-exact with transformers."""

import dataclasses
import functools

import hf_fixtures as fx
import pytest

from score_jax import tokenizer as tk

TEXTS = ["What is 2 + 3?", "Let me check my work again:\n  x = 3, so 3x + 1 = 10.", "héllo wörld ∑ 🙂", ""]
# Surrounding whitespace too: Llama 3's and Gemma's templates trim turns, Qwen2.5's does not.
TURNS = ["What is 2 + 3?\n", "The answer is 6.", "  There might be an error. Check again.", "It is 5. "]


@pytest.fixture(scope="module")
def tokenizers_dir(tmp_path_factory):
    """One directory per style, each with the transformers files (and tokenizer.model for gemma)."""
    root = tmp_path_factory.mktemp("tokenizers")
    hf = {name: getattr(fx, f"{name}_style_tokenizer")(str(root / name)) for name in ("llama3", "qwen2", "gemma")}
    hf["llama31"] = fx.llama3_style_tokenizer(str(root / "llama31"), fx.LLAMA31_CHAT_TEMPLATE)
    hf["qwen3"] = fx.qwen2_style_tokenizer(str(root / "qwen3"), fx.QWEN3_CHAT_TEMPLATE, added=("<think>", "</think>"))
    hf["gemma3"] = fx.gemma_style_tokenizer(str(root / "gemma3"), fx.GEMMA3_CHAT_TEMPLATE)
    return root, hf


def test_byte_tokenizer_round_trip():
    tok = tk.ByteTokenizer()
    for text in TEXTS:
        assert tok.decode(tok.encode(text, add_bos=True)) == text
    assert tok.encode("<start_of_turn>a") == [tok.token_id("<start_of_turn>"), ord("a") + 5]


@pytest.mark.parametrize("style", ["llama3", "qwen2", "qwen3", "gemma"])
def test_hf_tokenizer_matches_transformers(tokenizers_dir, style):
    root, hf = tokenizers_dir
    tok = tk.load_tokenizer(str(root / style))
    assert isinstance(tok, tk.HFTokenizer)
    assert tok.vocab_size == len(hf[style])
    assert (tok.bos_id, tok.eos_id) == (hf[style].bos_token_id, hf[style].eos_token_id)
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == hf[style].encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
    if tok.bos_id is not None:
        assert tok.encode("hi", add_bos=True)[0] == tok.bos_id


def test_sentencepiece_tokenizer(tokenizers_dir):
    root, hf = tokenizers_dir
    tok = tk.SentencePieceTokenizer(str(root / "gemma" / "tokenizer.model"))
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
    for text in TEXTS:
        assert tok.encode(text) == hf["gemma"].encode(text, add_special_tokens=False)
        assert tok.decode(tok.encode(text, add_bos=True)) == text
    # Control and user-defined special tokens in text map to their ids, and decode drops them.
    ids = tok.encode("<bos><start_of_turn>user\nhi<end_of_turn><eos>")
    assert ids[:2] == [tok.bos_id, tok.token_id("<start_of_turn>")] and ids[-2:] == [tok.token_id("<end_of_turn>"), 1]
    assert tok.decode(ids) == "user\nhi"
    with pytest.raises(KeyError, match="<|eot_id|>"):
        tok.token_id("<|eot_id|>")


def test_load_tokenizer_picks_by_file(tokenizers_dir, tmp_path):
    root, _ = tokenizers_dir
    assert isinstance(tk.load_tokenizer(str(root / "gemma" / "tokenizer.model")), tk.SentencePieceTokenizer)
    assert isinstance(tk.load_tokenizer(str(root / "llama3" / "tokenizer.json")), tk.HFTokenizer)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or tokenizer.model"):
        tk.load_tokenizer(str(tmp_path))


def _ours_and_theirs(tokenizers_dir, style, family, thinking=False):
    root, hf = tokenizers_dir
    toks = [tk.load_tokenizer(str(root / style))]
    if style.startswith("gemma"):  # both of Gemma's files must give the same ids
        toks.append(tk.SentencePieceTokenizer(str(root / style / "tokenizer.model")))
    return tk.template_for_checkpoint(str(root / style), family, thinking), toks, hf[style]


@pytest.mark.parametrize(
    "style,family,thinking",
    [
        ("llama3", "llama", False),
        ("llama31", "llama", False),
        ("gemma", "gemma", False),
        ("gemma", "gemma2", False),
        ("gemma3", "gemma3", False),
        ("qwen2", "qwen2", False),
        ("qwen3", "qwen3", False),
        ("qwen3", "qwen3", True),
    ],
)
def test_chat_template_matches_apply_chat_template(tokenizers_dir, style, family, thinking):
    template, toks, hf = _ours_and_theirs(tokenizers_dir, style, family, thinking)
    for tok in toks:
        # Two full rounds (user, model, user, model), and every prefix ending in a user turn with
        # the generation prompt, as the sampler builds them (enable_thinking: Qwen3's switch; the
        # other templates ignore it).
        theirs = functools.partial(fx.chat_ids, hf, enable_thinking=thinking)
        assert template.conversation(tok, TURNS, add_generation_prompt=False) == theirs(TURNS, False)
        for n in (1, 3):
            assert template.conversation(tok, TURNS[:n]) == theirs(TURNS[:n], True)
        assert template.prompt(tok, TURNS[0]) == theirs(TURNS[:1], True)
        assert tok.token_id(template.end_of_turn) in template.stop_ids(tok)


@pytest.mark.parametrize(
    "style,family,thinking",
    [("llama3", "llama", False), ("gemma", "gemma", False), ("qwen2", "qwen2", False)]
    + [("qwen3", "qwen3", False), ("qwen3", "qwen3", True)],
)
def test_episode_pieces_concatenate_to_the_conversation(tokenizers_dir, style, family, thinking):
    """prompt + reply (+ end of turn) + continuation == the template's two-round conversation,
    with attempt 1 under the opener it was sampled after (Qwen3: not its re-rendered history_open)."""
    template, toks, _ = _ours_and_theirs(tokenizers_dir, style, family, thinking)
    for tok in toks:
        reply = tok.encode(TURNS[1])
        expected = dataclasses.replace(template, history_open=None).conversation(tok, TURNS[:3])
        open_reply = template.prompt(tok, TURNS[0]) + reply
        assert open_reply + template.continuation(tok, TURNS[2], closed=False) == expected
        closed = open_reply + [tok.token_id(template.end_of_turn)]
        assert closed + template.continuation(tok, TURNS[2], closed=True) == expected


def test_qwen2_template_inserts_default_system_turn(tokenizers_dir):
    root, hf = tokenizers_dir
    tok = tk.load_tokenizer(str(root / "qwen2"))
    template = tk.template_for_family("qwen2")
    assert tok.bos_id is None and not template.add_bos
    assert tok.decode(template.prompt(tok, "hi")).startswith(
        "system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\nuser\nhi"
    )


def test_llama31_checkpoints_get_the_dated_system_turn(tokenizers_dir, tmp_path):
    root, _ = tokenizers_dir
    assert tk.template_for_checkpoint(str(root / "llama31"), "llama").name == "llama3.1"
    assert tk.template_for_checkpoint(str(root / "llama3"), "llama").name == "llama3"
    assert tk.template_for_checkpoint(str(tmp_path), "llama").name == "llama3"  # no tokenizer_config.json
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_config.json: not a readable tokenizer config"):
        tk.template_for_checkpoint(str(tmp_path), "llama")


def test_template_lookup():
    assert tk.template_for_family("gemma2") is tk.template_for_family("gemma3") is tk.get_chat_template("gemma")
    assert tk.template_for_family("llama").name == "llama3"
    assert (tk.template_for_family("qwen3").name, tk.template_for_family("qwen3", thinking=True).name) == (
        "qwen3",
        "qwen3_thinking",
    )
    with pytest.raises(ValueError, match="no chat template for model family 'mistral'"):
        tk.template_for_family("mistral")
    with pytest.raises(ValueError, match="model family 'llama' has no thinking mode"):
        tk.template_for_family("llama", thinking=True)


def test_qwen3_modes_and_single_mode_checkpoints(tokenizers_dir, tmp_path):
    """Non-thinking replies start after an empty <think> block; thinking ones write their own."""
    root, _ = tokenizers_dir
    tok = tk.load_tokenizer(str(root / "qwen3"))
    plain, thinking = (tk.template_for_checkpoint(str(root / "qwen3"), "qwen3", mode) for mode in (False, True))
    assert tok.decode(plain.prompt(tok, "hi")).endswith("assistant\n<think>\n\n</think>\n\n")
    assert tok.decode(thinking.prompt(tok, "hi")).endswith("assistant\n")
    assert plain.stop_ids(tok) == (tok.token_id("<|im_end|>"),)
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    with pytest.raises(ValueError, match="has no enable_thinking switch"):
        tk.template_for_checkpoint(str(tmp_path), "qwen3")
