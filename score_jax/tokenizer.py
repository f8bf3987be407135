"""Tokenizers behind one interface, and each model family's chat template.

Episodes are built from token ids, never by re-tokenising sampled text: the prompt is
``template.prompt(user_text)``; after attempt 1 comes ``template.continuation(instruction)``,
which closes the model's turn (unless attempt 1 already ended with its end-of-turn token), opens a
user turn with the instruction, and opens the next model turn.
"""

from __future__ import annotations

import abc
import dataclasses
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


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """A family's conversation format as text pieces around each turn.

    A conversation renders as ``bos + (user_open + text + user_close + model_open + reply +
    model_close)*``; `end_of_turn` is the special token the model emits to end its reply.
    """

    name: str
    user_open: str
    user_close: str
    model_open: str
    model_close: str
    end_of_turn: str
    add_bos: bool = True

    def prompt(self, tok: Tokenizer, user_text: str) -> list[int]:
        """BOS, the first user turn, and the opener of the model's reply."""
        return tok.encode(self.user_open + user_text + self.user_close + self.model_open, add_bos=self.add_bos)

    def continuation(self, tok: Tokenizer, user_text: str, closed: bool) -> list[int]:
        """After a model reply: close it (unless `closed`), a user turn, the next model opener."""
        text = self.user_open + user_text + self.user_close + self.model_open
        close = self.model_close[len(self.end_of_turn):] if closed else self.model_close
        return tok.encode(close + text)

    def stop_ids(self, tok: Tokenizer) -> tuple[int, ...]:
        ids = {tok.token_id(self.end_of_turn)}
        if tok.eos_id is not None:
            ids.add(tok.eos_id)
        return tuple(sorted(ids))

    def conversation(self, tok: Tokenizer, turns: Sequence[str], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of alternating user/model turns (user first), as a family's template renders."""
        text = ""
        for i, turn in enumerate(turns):
            text += (self.user_open + turn + self.user_close) if i % 2 == 0 else (turn + self.model_close)
            if i % 2 == 0 and (add_generation_prompt or i + 1 < len(turns)):
                text += self.model_open
        return tok.encode(text, add_bos=self.add_bos)


CHAT_TEMPLATES = {
    "gemma": ChatTemplate(
        name="gemma", user_open="<start_of_turn>user\n", user_close="<end_of_turn>\n",
        model_open="<start_of_turn>model\n", model_close="<end_of_turn>\n", end_of_turn="<end_of_turn>"),
}


def get_chat_template(name: str) -> ChatTemplate:
    if name not in CHAT_TEMPLATES:
        raise ValueError(f"unknown chat template {name!r}; known: {sorted(CHAT_TEMPLATES)}")
    return CHAT_TEMPLATES[name]
