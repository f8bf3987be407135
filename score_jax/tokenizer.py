"""Tokenizers behind one interface, and each model family's chat template.

Three implementations: `ByteTokenizer` (tests and the offline demo), `SentencePieceTokenizer`
(``tokenizer.model``, Gemma) and `HFTokenizer` (a transformers ``tokenizer.json``: Llama 3,
Qwen2.5, Qwen3, Gemma 3, through the ``tokenizers`` library). `load_tokenizer` picks one for a checkpoint directory.

Episodes are built from token ids, never by re-tokenising sampled text: the prompt is
``template.prompt(user_text)``; after attempt 1 comes ``template.continuation(instruction)``,
which closes the model's turn (unless attempt 1 already ended with its end-of-turn token), opens a
user turn with the instruction, and opens the next model turn.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import re
from collections.abc import Sequence


class Tokenizer(abc.ABC):
    """Text <-> token ids. Special tokens are looked up by their text."""

    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int

    @abc.abstractmethod
    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of `text`; special-token strings in `text` map to their ids."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, special tokens dropped."""

    @abc.abstractmethod
    def token_id(self, piece: str) -> int:
        """The id of one special token such as ``<end_of_turn>``; KeyError if absent."""


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes plus a few special tokens: the offline demo's and the tests' tokenizer."""

    SPECIALS = ("<pad>", "<bos>", "<eos>", "<end_of_turn>", "<start_of_turn>")

    def __init__(self):
        self._offset = len(self.SPECIALS)
        self.vocab_size = self._offset + 256
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = [self.bos_id] if add_bos else []
        i = 0
        while i < len(text):
            for j, special in enumerate(self.SPECIALS):
                if text.startswith(special, i):
                    ids.append(j)
                    i += len(special)
                    break
            else:
                ids.extend(b + self._offset for b in text[i].encode("utf-8"))
                i += 1
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        data = bytes(int(i) - self._offset for i in ids if int(i) >= self._offset)
        return data.decode("utf-8", errors="replace")

    def token_id(self, piece: str) -> int:
        return self.SPECIALS.index(piece)


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece ``.model`` file (Gemma's ``tokenizer.model``).

    SentencePiece reads user-defined pieces such as ``<start_of_turn>`` in text as themselves,
    but control pieces (``<bos>``, ``<eos>``, ``<pad>``) as plain characters; `encode` splits the
    text on the control pieces first so that every special-token string maps to its id, as
    transformers' tokenizers do. `decode` drops control pieces and `special_tokens`.
    """

    def __init__(self, model_file: str, special_tokens: Sequence[str] = ("<start_of_turn>", "<end_of_turn>")):
        import sentencepiece  # noqa: PLC0415 - optional until a SentencePiece model is used

        self._sp = sentencepiece.SentencePieceProcessor(model_file=model_file)
        self.vocab_size = self._sp.get_piece_size()
        self.bos_id = self._sp.bos_id() if self._sp.bos_id() >= 0 else None
        self.eos_id = self._sp.eos_id() if self._sp.eos_id() >= 0 else None
        self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else (self.eos_id or 0)
        control = {i for i in range(self.vocab_size) if self._sp.is_control(i)}
        self._dropped = control | {self._sp.piece_to_id(p) for p in special_tokens if self._has(p)}
        pieces = sorted((self._sp.id_to_piece(i) for i in control), key=len, reverse=True)
        self._control = {self._sp.id_to_piece(i): i for i in control}
        self._split = re.compile("(" + "|".join(re.escape(p) for p in pieces if p) + ")") if pieces else None

    def _has(self, piece: str) -> bool:
        return self._sp.id_to_piece(self._sp.piece_to_id(piece)) == piece

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = [self.bos_id] if add_bos and self.bos_id is not None else []
        for part in self._split.split(text) if self._split else [text]:
            if part in self._control:
                ids.append(self._control[part])
            elif part:
                ids.extend(self._sp.encode(part))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids if int(i) not in self._dropped])

    def token_id(self, piece: str) -> int:
        if not self._has(piece):
            raise KeyError(f"{piece!r} is not a piece of this SentencePiece model")
        return self._sp.piece_to_id(piece)


# Special tokens looked up by name when tokenizer_config.json does not name them.
_BOS_NAMES = ("<|begin_of_text|>", "<bos>", "<s>")
_EOS_NAMES = ("<|end_of_text|>", "<eos>", "</s>", "<|endoftext|>")


class HFTokenizer(Tokenizer):
    """A transformers fast tokenizer (``tokenizer.json``) through the ``tokenizers`` library.

    BOS, EOS and PAD come from ``tokenizer_config.json`` (or ``special_tokens_map.json``) beside the
    file when present, else from well-known token names. Added tokens in the text (``<|eot_id|>``,
    ``<|im_end|>``) encode to their ids; `decode` drops the ones marked special.
    """

    def __init__(self, path: str):
        import tokenizers  # noqa: PLC0415 - optional until a tokenizer.json is used

        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        self._tok = tokenizers.Tokenizer.from_file(file)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        names = _special_token_names(os.path.dirname(file))

        def find(key: str, fallbacks: Sequence[str]) -> int | None:
            candidates = ([names[key]] if names[key] else []) if key in names else fallbacks
            ids = [self._tok.token_to_id(piece) for piece in candidates]
            return next((i for i in ids if i is not None), None)

        self.bos_id = find("bos_token", _BOS_NAMES)
        self.eos_id = find("eos_token", _EOS_NAMES)
        pad = find("pad_token", ())
        self.pad_id = pad if pad is not None else (self.eos_id or 0)

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if add_bos and self.bos_id is not None else []) + ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_id(self, piece: str) -> int:
        i = self._tok.token_to_id(piece)
        if i is None:
            raise KeyError(f"{piece!r} is not a token of this tokenizer")
        return i


def _special_token_names(directory: str) -> dict[str, str | None]:
    """bos/eos/pad token strings from tokenizer_config.json or special_tokens_map.json (None: explicitly none)."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with open(path) as f:
                cfg = json.load(f)
            out = {}
            for key in ("bos_token", "eos_token", "pad_token"):
                if key in cfg:
                    value = cfg[key]
                    out[key] = value.get("content") if isinstance(value, dict) else value
            return out
    return {}


def load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer of a checkpoint directory (``tokenizer.json`` preferred over ``tokenizer.model``), or a file."""
    if os.path.isdir(path):
        for name, cls in (("tokenizer.json", HFTokenizer), ("tokenizer.model", SentencePieceTokenizer)):
            if os.path.exists(os.path.join(path, name)):
                return cls(os.path.join(path, name))
        raise FileNotFoundError(f"no tokenizer.json or tokenizer.model in {path}")
    if path.endswith(".json"):
        return HFTokenizer(path)
    if path.endswith(".model"):
        return SentencePieceTokenizer(path)
    raise ValueError(f"unknown tokenizer file {path!r}: expected a directory, tokenizer.json or a .model file")


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """A family's conversation format as text pieces around each turn.

    A conversation renders as ``bos + preamble + (user_open + text + user_close + model_open +
    reply + model_close)*``; `end_of_turn` is the special token the model emits to end its reply;
    `preamble` is what the template puts before the first turn when no system message is given.
    With `trim_turns` (Llama 3, Gemma: their HF templates apply Jinja's ``trim``), user turns
    lose leading and trailing whitespace, as do model turns re-rendered by `conversation`.

    `model_open` opens the reply to be generated. Qwen3's template re-renders finished replies
    with other openers: `history_open` for one a user turn follows (its ``<think>`` block
    dropped), `reply_open` for a last one (an empty ``<think>`` block added); both default to
    `model_open`. An episode is sampled as one growing sequence, so attempt 1 keeps the opener
    it was sampled after (`prompt` + reply + `continuation`): only `conversation` drops it.
    """

    name: str
    user_open: str
    user_close: str
    model_open: str
    model_close: str
    end_of_turn: str
    add_bos: bool = True
    preamble: str = ""
    trim_turns: bool = False
    history_open: str | None = None
    reply_open: str | None = None

    def _turn(self, text: str) -> str:
        return text.strip() if self.trim_turns else text

    def prompt(self, tok: Tokenizer, user_text: str) -> list[int]:
        """BOS, the preamble, the first user turn, and the opener of the model's reply."""
        text = self.preamble + self.user_open + self._turn(user_text) + self.user_close + self.model_open
        return tok.encode(text, add_bos=self.add_bos)

    def continuation(self, tok: Tokenizer, user_text: str, closed: bool) -> list[int]:
        """After a model reply: close it (unless `closed`), a user turn, the next model opener."""
        text = self.user_open + self._turn(user_text) + self.user_close + self.model_open
        close = self.model_close[len(self.end_of_turn) :] if closed else self.model_close
        return tok.encode(close + text)

    def stop_ids(self, tok: Tokenizer) -> tuple[int, ...]:
        ids = {tok.token_id(self.end_of_turn)}
        if tok.eos_id is not None:
            ids.add(tok.eos_id)
        return tuple(sorted(ids))

    def conversation(self, tok: Tokenizer, turns: Sequence[str], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of alternating user/model turns (user first), as a family's template renders."""
        text = self.preamble
        for i, turn in enumerate(turns):
            turn, last = self._turn(turn), i + 1 == len(turns)
            if i % 2 == 0:
                text += (
                    self.user_open
                    + turn
                    + self.user_close
                    + (self.model_open if add_generation_prompt and last else "")
                )
            else:
                text += ((self.reply_open if last else self.history_open) or self.model_open) + turn + self.model_close
        return tok.encode(text, add_bos=self.add_bos)


_LLAMA3 = dict(
    user_open="<|start_header_id|>user<|end_header_id|>\n\n",
    user_close="<|eot_id|>",
    model_open="<|start_header_id|>assistant<|end_header_id|>\n\n",
    model_close="<|eot_id|>",
    end_of_turn="<|eot_id|>",
    trim_turns=True,
)
# Llama 3.1 / 3.2 Instruct templates always open with a system turn stating the knowledge cut-off
# and a date (theirs defaults to 26 Jul 2024 when the caller passes none; fixed here, so prompts
# are reproducible).
_LLAMA31_PREAMBLE = (
    "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    "Today Date: 26 Jul 2024\n\n<|eot_id|>"
)

_GEMMA = ChatTemplate(
    name="gemma",
    user_open="<start_of_turn>user\n",
    user_close="<end_of_turn>\n",
    model_open="<start_of_turn>model\n",
    model_close="<end_of_turn>\n",
    end_of_turn="<end_of_turn>",
    trim_turns=True,
)

CHAT_TEMPLATES = {
    "gemma": _GEMMA,
    "gemma2": _GEMMA,
    "gemma3": _GEMMA,
    "llama3": ChatTemplate(name="llama3", **_LLAMA3),
    "llama3.1": ChatTemplate(name="llama3.1", **_LLAMA3, preamble=_LLAMA31_PREAMBLE),
    # One special token per turn boundary (roles alternate): the byte tokenizer's short format
    # for the offline demo, where every token of a tiny CPU run counts.
    "compact": ChatTemplate(
        name="compact",
        user_open="<start_of_turn>",
        user_close="<end_of_turn>",
        model_open="<start_of_turn>",
        model_close="<end_of_turn>",
        end_of_turn="<end_of_turn>",
    ),
    # Qwen2.5's template opens with this system turn when the conversation has none.
    "qwen2": ChatTemplate(
        name="qwen2",
        user_open="<|im_start|>user\n",
        user_close="<|im_end|>\n",
        model_open="<|im_start|>assistant\n",
        model_close="<|im_end|>\n",
        end_of_turn="<|im_end|>",
        add_bos=False,
        preamble="<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n",
    ),
}
# Qwen3 (hybrid thinking): Qwen2.5's turns without its default system turn, finished replies
# re-rendered as its template does (see ChatTemplate). Non-thinking mode opens each reply after an
# empty <think> block, as apply_chat_template(..., enable_thinking=False) does; thinking mode lets
# the model write the block.
_THINK_OPEN = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
_QWEN3 = dataclasses.replace(
    CHAT_TEMPLATES["qwen2"], name="qwen3", preamble="", model_open=_THINK_OPEN, reply_open=_THINK_OPEN
)
CHAT_TEMPLATES["qwen3"] = dataclasses.replace(_QWEN3, history_open="<|im_start|>assistant\n")
CHAT_TEMPLATES["qwen3_thinking"] = dataclasses.replace(
    _QWEN3, name="qwen3_thinking", model_open="<|im_start|>assistant\n"
)

# Model family (ModelConfig.family) -> its instruction-tuned chat template, and its thinking variant.
_FAMILY_TEMPLATES = {
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "llama": "llama3",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
}
_THINKING_TEMPLATES = {"qwen3": "qwen3_thinking"}


def get_chat_template(name: str) -> ChatTemplate:
    if name not in CHAT_TEMPLATES:
        raise ValueError(f"unknown chat template {name!r}; known: {sorted(CHAT_TEMPLATES)}")
    return CHAT_TEMPLATES[name]


def template_for_family(family: str, thinking: bool = False) -> ChatTemplate:
    """The chat template of a model family (a ModelConfig.family); `thinking` picks Qwen3's thinking mode."""
    if family not in _FAMILY_TEMPLATES:
        raise ValueError(f"no chat template for model family {family!r}; known: {sorted(_FAMILY_TEMPLATES)}")
    if thinking and family not in _THINKING_TEMPLATES:
        raise ValueError(
            f"model family {family!r} has no thinking mode (only {sorted(_THINKING_TEMPLATES)} do): set thinking=False"
        )
    return CHAT_TEMPLATES[(_THINKING_TEMPLATES if thinking else _FAMILY_TEMPLATES)[family]]


def template_for_checkpoint(directory: str, family: str, thinking: bool = False) -> ChatTemplate:
    """The family's template, refined by the checkpoint's own Jinja template when it has one.

    Llama 3.1 and 3.2 Instruct share Llama 3's turns but open every conversation with a dated
    system turn; their Jinja template (``chat_template.jinja``, or ``chat_template`` in
    ``tokenizer_config.json``) is recognised by that text. Qwen3's templates are those of the
    hybrid-thinking models, whose Jinja takes ``enable_thinking``; a Qwen3 checkpoint whose Jinja
    does not (the single-mode 2507 releases) is refused rather than given the wrong turns.
    """
    template = template_for_family(family, thinking)
    if family not in ("llama", "qwen3"):
        return template
    jinja = _checkpoint_jinja(directory)
    if family == "qwen3":
        if jinja and "enable_thinking" not in jinja:
            raise ValueError(
                f"the chat template in {directory} has no enable_thinking switch (a single-mode Qwen3 such as a 2507 "
                "Instruct or Thinking release?); score_jax renders only the hybrid Qwen3 template"
            )
        return template
    return CHAT_TEMPLATES["llama3.1"] if "Cutting Knowledge Date" in jinja else template


def _checkpoint_jinja(directory: str) -> str:
    """The checkpoint's chat template source ("" when it has none)."""
    path = os.path.join(directory, "chat_template.jinja")
    try:
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return f.read()
        path = os.path.join(directory, "tokenizer_config.json")
        if not os.path.isfile(path):
            return ""
        with open(path, encoding="utf-8") as f:
            jinja = json.load(f).get("chat_template") or ""
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable tokenizer config ({e})") from e
    if isinstance(jinja, list):  # [{"name": ..., "template": ...}, ...]
        jinja = " ".join(str(t.get("template", "")) for t in jinja if isinstance(t, dict))
    return str(jinja)
