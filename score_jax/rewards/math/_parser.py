"""Tokenizer and parser: LaTeX answer -> tree of tuples (step 2b of `is_equivalent`)."""

from __future__ import annotations

import functools
import re
from fractions import Fraction
from typing import NamedTuple

from score_jax.rewards.math._limits import MAX_ANSWER_CHARS, MAX_LIST_ITEMS, MAX_NESTING
from score_jax.rewards.math._text import CONNECTIVES, nesting_depth

# Node kinds (first tuple element):
#   ("num", Fraction, places)  literal; `places` = decimal places written (0 for integers)
#   ("sym", name)  ("const", "pi"|"e"|"i"|"inf")
#   ("add", terms)  ("mul", factors)  ("neg", x)  ("div", a, b)  ("pow", a, b)
#   ("call", name, args)  known function or an unknown one such as f(x)
#   ("idx", name, subscript)  a_{n+1}: a function of its subscript
#   ("pm", a | None, b)  a \pm b
#   ("pct", x)  ("ratio", parts)  ("sum", "sum"|"prod", var, lo, hi, body)
#   ("list", items)  top-level comma/"and" list     ("set", items)  ("tuple", items)
#   ("interval", lo, hi, left_open, right_open)  ("union", parts)  ("setop", op, a, b)
#   ("matrix", rows)  ("rel", ops, parts)  relation chain a op b op c


class _ParseError(Exception):
    pass


_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>\d+\.\d+|\.\d+|\d+)|(?P<cmd>\\(?:[a-zA-Z]+|[^a-zA-Z\s]))|(?P<word>[a-zA-Z]+)"
    r"|(?P<op><=|>=|!=|\S))"
)
_RELOPS = {
    "=": "=",
    "<": "<",
    ">": ">",
    "<=": "<=",
    ">=": ">=",
    "!=": "!=",
    r"\le": "<=",
    r"\leq": "<=",
    r"\ge": ">=",
    r"\geq": ">=",
    r"\lt": "<",
    r"\gt": ">",
    r"\ne": "!=",
    r"\neq": "!=",
    r"\approx": "~",
    r"\in": "in",
    r"\equiv": "=",
    r"\Rightarrow": "=",
    r"\implies": "=",
    r"\to": "=",
    r"\rightarrow": "=",
}
FLIPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}
_FUNCS = {
    "sin",
    "cos",
    "tan",
    "sec",
    "csc",
    "cot",
    "arcsin",
    "arccos",
    "arctan",
    "sinh",
    "cosh",
    "tanh",
    "exp",
    "ln",
    "log",
    "lg",
    "arcsec",
    "arccsc",
    "arccot",
    "sgn",
    "det",
}
WORD_FUNCS = _FUNCS | {"sqrt", "gcd", "lcm", "max", "min", "abs", "floor", "ceil"}
_CMD_FUNCS = _FUNCS | {"gcd", "max", "min"}
_FUNCTION_LETTERS = set("fghFGHPQW")
_WORD_CONSTS = {"pi": ("const", "pi"), "infty": ("const", "inf"), "inf": ("const", "inf"), "infinity": ("const", "inf")}
_DECORATIONS = {
    "overline",
    "vec",
    "hat",
    "bar",
    "widehat",
    "overrightarrow",
    "overleftrightarrow",
    "underline",
    "tilde",
    "dot",
    "ddot",
    "widetilde",
    "overarc",
    "stackrel",
}
_CLOSING_CMDS = {r"\}", r"\rfloor", r"\rceil", r"\rvert", r"\rVert", r"\end", r"\\", r"\right"}
_MUL_CMDS = {r"\cdot", r"\times", r"\ast", r"\star"}
_SET_OPS = {r"\cup": "union", r"\cap": "inter", r"\setminus": "minus", r"\backslash": "minus"}
_ONE = ("num", Fraction(1), 0)


def _tokenize(s: str) -> list[tuple[str, str, bool]]:
    toks, pos = [], 0
    while pos < len(s):
        match = _TOKEN_RE.match(s, pos)
        if not match or match.end() == pos:
            break
        kind = match.lastgroup
        toks.append((kind, match.group(kind), match.start(kind) > pos))
        pos = match.end()
    return toks


def _num(text: str) -> tuple:
    places = len(text.split(".")[1]) if "." in text else 0
    return ("num", Fraction(text), places)


def _mul(a, b) -> tuple:
    fa = a[1] if a[0] == "mul" else (a,)
    fb = b[1] if b[0] == "mul" else (b,)
    return ("mul", fa + fb)


def _nested(method):
    """Counts recursion through `method`; past MAX_NESTING levels the parse fails.

    Bracket counting misses `-----x` or `\\sqrt\\sqrt\\sqrt x`; this bounds every path, so the
    evaluators never see a tree deep enough to approach the interpreter's stack.
    """

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        self.depth += 1
        try:
            if self.depth > 2 * MAX_NESTING:
                raise _ParseError("answer nested too deeply")
            return method(self, *args, **kwargs)
        finally:
            self.depth -= 1

    return wrapped


class _Parser:
    """Recursive-descent parser for one normalised answer string."""

    def __init__(self, s: str):
        self.toks = _tokenize(s)
        self.i = 0
        self.abs_depth = 0
        self.depth = 0

    # -- token helpers ------------------------------------------------------------------------
    def peek(self, k: int = 0) -> tuple[str, str, bool]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("end", "", False)

    def take(self) -> tuple[str, str, bool]:
        tok = self.peek()
        self.i += 1
        return tok

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok[0] in ("op", "cmd") and tok[1] == text

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise _ParseError(f"expected {text!r} at token {self.i}: {self.peek()!r}")

    def split_first_char(self) -> tuple[str, str, bool]:
        """Takes one character of a multi-character number or word (LaTeX: `\\frac12`, `x^23`)."""
        kind, text, space = self.take()
        if kind in ("num", "word") and len(text) > 1 and not (kind == "num" and text[0] == "."):
            self.i -= 1
            self.toks[self.i] = (kind, text[1:], False)
            return kind, text[0], space
        return kind, text, space

    def is_sep(self, tok) -> bool:
        return tok[0] == "word" and tok[1].lower() in CONNECTIVES

    def relop(self, tok) -> str | None:
        if tok[0] == "op" and tok[1] in _RELOPS:
            return _RELOPS[tok[1]]
        if tok[0] == "cmd" and tok[1] in _RELOPS:
            return _RELOPS[tok[1]]
        return None

    def starts_primary(self, tok) -> bool:
        kind, text, _ = tok
        if kind == "num":
            return True
        if kind == "word":
            return not self.is_sep(tok)
        if kind == "op":
            return text in "([{" or (text == "|" and self.abs_depth == 0)
        if kind == "cmd":
            return not (
                text in _RELOPS
                or text in _CLOSING_CMDS
                or text in _MUL_CMDS
                or text in _SET_OPS
                or text in (r"\pm", r"\mp", r"\%", r"\div", "\\&", r"\mid", r"\colon")
            )
        return False

    # -- grammar ------------------------------------------------------------------------------
    def parse_answer(self) -> tuple:
        groups: list[list[tuple]] = [[]]
        while self.peek()[0] != "end":
            tok = self.peek()
            if tok[1] == "," and tok[0] == "op":
                self.i += 1
                continue
            if (tok[0] == "op" and tok[1] == ";") or self.is_sep(tok):
                self.i += 1
                groups.append([])
                continue
            groups[-1].append(self.parse_relation())
            if self.peek()[0] != "end" and not (self.at(",") or self.at(";") or self.is_sep(self.peek())):
                raise _ParseError(f"unexpected token {self.peek()!r}")
        groups = [g for g in groups if g]
        if not groups:
            raise _ParseError("empty answer")
        if (
            len(groups) > 1
            and any(len(g) > 1 for g in groups)
            and all(len(g) == 1 or all(labelled_value(e) is not None for e in g) for g in groups)
        ):
            # "p = 5, q = 2; p = 7, q = 2": each group of labelled values is one tuple.
            items = [g[0] if len(g) == 1 else ("tuple", tuple(labelled_value(e) for e in g)) for g in groups]
        else:
            items = [e for g in groups for e in g]
        if len(items) > MAX_LIST_ITEMS:
            raise _ParseError("list too long")
        return items[0] if len(items) == 1 else ("list", tuple(items))

    def parse_seq(self, closers: set[str]) -> list[tuple]:
        items = []
        while not (self.peek()[1] in closers and self.peek()[0] in ("op", "cmd")):
            if self.peek()[0] == "end":
                raise _ParseError("unclosed bracket")
            if self.accept(",") or self.accept(";"):
                continue
            items.append(self.parse_relation())
            if not (self.at(",") or self.at(";") or (self.peek()[1] in closers)):
                raise _ParseError(f"unexpected token {self.peek()!r} in brackets")
        return items

    def parse_relation(self) -> tuple:
        parts = [self.parse_setexpr()]
        ops = []
        while (op := self.relop(self.peek())) is not None:
            self.i += 1
            ops.append(op)
            parts.append(self.parse_setexpr())
        if not ops:
            return parts[0]
        return _relation(ops, parts)

    def parse_setexpr(self) -> tuple:
        node = self.parse_ratio()
        while self.peek()[0] == "cmd" and self.peek()[1] in _SET_OPS:
            op = _SET_OPS[self.take()[1]]
            rhs = self.parse_ratio()
            if op == "union":
                left = node[1] if node[0] == "union" else (node,)
                node = ("union", left + (rhs,))
            else:
                node = ("setop", op, node, rhs)
        return node

    def parse_ratio(self) -> tuple:
        parts = [self.parse_additive()]
        while self.at(":") or self.at(r"\colon"):
            self.i += 1
            parts.append(self.parse_additive())
        return parts[0] if len(parts) == 1 else ("ratio", tuple(parts))

    def parse_additive(self) -> tuple:
        node = self.parse_signed()
        terms = [node]
        while True:
            if self.accept("+"):
                terms.append(self.parse_signed())
            elif self.accept("-"):
                terms.append(("neg", self.parse_signed()))
            elif self.accept(r"\pm") or self.accept(r"\mp"):
                left = terms[0] if len(terms) == 1 else ("add", tuple(terms))
                terms = [("pm", left, self.parse_signed())]
            else:
                break
        return terms[0] if len(terms) == 1 else ("add", tuple(terms))

    def parse_signed(self) -> tuple:
        return self.parse_signs(self.parse_term, plus_minus=True)

    @_nested
    def parse_signs(self, operand, plus: bool = True, plus_minus: bool = False) -> tuple:
        """Leading `-` (and `+`, `\\pm`, `\\mp` where allowed), then `operand()`: `-x` -> ("neg", x)."""
        if self.accept("-"):
            return ("neg", self.parse_signs(operand, plus, plus_minus))
        if plus and self.accept("+"):
            return self.parse_signs(operand, plus, plus_minus)
        if plus_minus and (self.accept(r"\pm") or self.accept(r"\mp")):
            return ("pm", None, self.parse_signs(operand, plus, plus_minus))
        return operand()

    def parse_term(self) -> tuple:
        node = self.parse_postfix()
        while True:
            tok = self.peek()
            if tok[0] in ("op", "cmd") and (tok[1] == "*" or tok[1] in _MUL_CMDS):
                self.i += 1
                node = _mul(node, self.parse_signed_factor())
            elif tok[0] in ("op", "cmd") and tok[1] in ("/", r"\div"):
                self.i += 1
                node = ("div", node, self.parse_signed_factor())
            elif tok[0] == "word" and self.at_unit():
                self.skip_unit()
            elif self.starts_primary(tok):
                node = _mul(node, self.parse_postfix())
            else:
                return node

    def parse_signed_factor(self) -> tuple:
        return self.parse_signs(self.parse_postfix)

    def at_unit(self) -> bool:
        """A space-separated word after a value that ends the element: a unit ("5 cm^2")."""
        j = self.i
        tok = self.toks[j]
        if not tok[2] or len(tok[1]) < 2 or self.is_sep(tok) or tok[1].lower() in _WORD_CONSTS or tok[1] in WORD_FUNCS:
            return False
        while j < len(self.toks) and self.toks[j][0] == "word" and not self.is_sep(self.toks[j]):
            j += 1
        if j < len(self.toks) and self.toks[j][1] == "^":
            j += 2
            if j - 1 < len(self.toks) and self.toks[j - 1][1] == "{":
                j += 2
        if j >= len(self.toks):
            return True
        kind, text, _ = self.toks[j]
        if self.is_sep(self.toks[j]):
            return True
        return kind in ("op", "cmd") and (text in ",;)]}" or text in _RELOPS or text == r"\%")

    def skip_unit(self) -> None:
        while self.peek()[0] == "word" and not self.is_sep(self.peek()):
            self.i += 1
        if self.accept("^"):
            self.parse_script()

    def parse_postfix(self) -> tuple:
        node = self.parse_primary()
        while True:
            if self.accept("^"):
                node = ("pow", node, self.parse_script())
            elif self.at("!") and self.peek(1)[1] != "=":
                self.i += 1
                node = ("call", "fact", (node,))
            elif self.at("'") and node[0] == "sym":
                self.i += 1
                node = ("sym", node[1] + "'")
            elif self.accept(r"\%"):
                node = ("pct", node)
            else:
                return node

    def parse_script(self) -> tuple:
        """Argument of ^ or _: like a command's argument, or a negated one (x^-1)."""
        return self.parse_signs(self.parse_arg, plus=False)

    def parse_arg(self) -> tuple:
        """Argument of \\frac, \\sqrt, ...: a braced group or one character / command."""
        if self.accept("{"):
            node = self.parse_group_body("}")
            self.expect("}")
            return node
        kind, text, _ = self.split_first_char()
        if kind == "num":
            return _num(text)
        if kind == "word":
            return _word_node(text)
        if kind == "cmd":
            self.i -= 1
            return self.parse_primary()
        raise _ParseError(f"bad argument {text!r}")

    def parse_group_body(self, closer: str) -> tuple:
        items = self.parse_seq({closer})
        if not items:
            raise _ParseError("empty group")
        return items[0] if len(items) == 1 else ("set", tuple(items))

    def parse_subscript_name(self, name: str) -> tuple:
        """`x_1`, `a_{37}` -> symbol names; `F_{n-k}`, `a_i` -> ("idx", ...)."""
        if self.accept("{"):
            start = self.i
            sub = self.parse_group_body("}")
            raw = "".join(t[1] for t in self.toks[start : self.i])
            self.expect("}")
        else:
            kind, raw, _ = self.split_first_char()
            sub = _num(raw) if kind == "num" else _word_node(raw) if kind == "word" else None
            if sub is None:
                raise _ParseError("bad subscript")
        if sub[0] == "num" and sub[2] == 0:
            return ("sym", f"{name}_{sub[1]}")
        return ("idx", name, sub)

    @_nested
    def parse_primary(self) -> tuple:
        kind, text, _ = self.take()
        if kind == "num":
            if self.at("_"):  # base notation: 204_5
                self.i += 1
                sub = self.parse_script()
                return ("sym", f"{text}_{_key(sub)}")
            return _num(text)
        if kind == "word":
            return self.parse_word(text)
        if kind == "op":
            if text == "(":
                return self.parse_bracket("(")
            if text == "[":
                return self.parse_bracket("[")
            if text == "{":
                node = self.parse_group_body("}")
                self.expect("}")
                return node
            if text == "|" and self.abs_depth == 0:
                self.abs_depth += 1
                inner = self.parse_additive()
                self.abs_depth -= 1
                self.expect("|")
                return ("call", "abs", (inner,))
        if kind == "cmd":
            return self.parse_command(text)
        raise _ParseError(f"unexpected {text!r}")

    def parse_word(self, word: str) -> tuple:
        low = word.lower()
        if low in _WORD_CONSTS:
            return _WORD_CONSTS[low]
        if word in WORD_FUNCS and self.at("("):
            self.i += 1
            args = self.parse_seq({")"})
            self.expect(")")
            return ("call", word, tuple(args))
        factors = [_letter(c) for c in word[:-1]]
        last = word[-1]
        node = _letter(last)
        if self.at("_"):
            self.i += 1
            node = self.parse_subscript_name(last)
        if self.at("'"):
            self.i += 1
            node = ("sym", _key(node) + "'") if node[0] != "sym" else ("sym", node[1] + "'")
        if self.at("(") and not self.peek()[2] and (last in _FUNCTION_LETTERS or node[1].endswith("'")):
            self.i += 1
            args = self.parse_seq({")"})
            self.expect(")")
            node = ("call", _key(node), tuple(args))
        for factor in reversed(factors):
            node = _mul(factor, node)
        return node

    def parse_bracket(self, opener: str) -> tuple:
        items = self.parse_seq({")", "]"})
        closer = self.take()[1]
        if not items:
            return ("tuple", ())
        if opener == "(" and closer == ")":
            return items[0] if len(items) == 1 else ("tuple", tuple(items))
        if len(items) == 2:
            return ("interval", items[0], items[1], opener == "(", closer == ")")
        if opener == "[" and closer == "]":
            return items[0] if len(items) == 1 else ("tuple", tuple(items))
        raise _ParseError("bad interval")

    def parse_command(self, cmd: str) -> tuple:
        name = cmd[1:]
        if name == "frac" or name == "over":
            return ("div", self.parse_arg(), self.parse_arg())
        if name == "sqrt":
            if self.accept("["):
                index = self.parse_additive()
                self.expect("]")
                return ("call", "root", (self.parse_arg(), index))
            return ("call", "sqrt", (self.parse_arg(),))
        if name in ("pi", "varpi"):
            return ("const", "pi")
        if name == "infty":
            return ("const", "inf")
        if name in ("imath", "jmath"):
            return ("const", "i")
        if name in ("emptyset", "varnothing"):
            return ("set", ())
        if name in ("boxed", "fbox"):
            return self.parse_arg()
        if name == "binom":
            return ("call", "binom", (self.parse_arg(), self.parse_arg()))
        if name == "{":
            items = self.parse_seq({r"\}"})
            self.expect(r"\}")
            return ("set", tuple(items))
        if name in ("lfloor", "lceil"):
            inner = self.parse_additive()
            self.expect(r"\rfloor" if name == "lfloor" else r"\rceil")
            return ("call", "floor" if name == "lfloor" else "ceil", (inner,))
        if name in ("lvert", "vert", "|", "lVert", "Vert"):
            inner = self.parse_additive()
            if not (
                self.accept(r"\rvert")
                or self.accept(r"\vert")
                or self.accept(r"\|")
                or self.accept(r"\rVert")
                or self.accept(r"\Vert")
            ):
                raise _ParseError("unclosed |")
            return ("call", "abs", (inner,))
        if name == "begin":
            return self.parse_environment()
        if name in ("sum", "prod"):
            return self.parse_big_operator(name)
        if name in _CMD_FUNCS or name in ("ln", "log"):
            return self.parse_function(name)
        if name in ("dots", "cdots", "ldots", "vdots"):
            return ("sym", "...")
        if name in _DECORATIONS:
            return ("sym", f"{name}{{{_key(self.parse_arg())}}}")
        if re.fullmatch(r"[a-zA-Z]+", name):
            if self.at("{"):  # an unknown command with an argument: a function of it
                self.i += 1
                args = self.parse_seq({"}"})
                self.expect("}")
                return ("call", name, tuple(args))
            node = ("sym", "\\" + name)
            if self.at("_"):
                self.i += 1
                node = self.parse_subscript_name("\\" + name)
            return node
        raise _ParseError(f"unexpected command {cmd!r}")

    def parse_function(self, name: str) -> tuple:
        power = None
        base = None
        for _ in range(2):
            if self.accept("^"):
                power = self.parse_script()
            elif self.accept("_"):
                base = self.parse_script()
        if self.at("("):
            self.i += 1
            args = self.parse_seq({")"})
            self.expect(")")
        else:
            args = [self.parse_function_argument()]
        if name == "lg":
            name, base = "log", ("num", Fraction(10), 0)
        if name in ("log", "ln") and base is not None:
            args = [args[0], base]
        node = ("call", name, tuple(args))
        if power is not None:
            if power == ("neg", _ONE) and name in ("sin", "cos", "tan"):
                return ("call", "arc" + name, tuple(args))
            node = ("pow", node, power)
        return node

    def parse_function_argument(self) -> tuple:
        """`\\sin 2x` -> 2x; stops before the next function (`\\sin b \\cos a`) or operator."""
        node = self.parse_postfix()
        while self.starts_primary(self.peek()) and not (
            self.peek()[0] == "cmd" and self.peek()[1][1:] in _CMD_FUNCS | {"ln", "log", "frac", "sqrt"}
        ):
            node = _mul(node, self.parse_postfix())
        return node

    def parse_big_operator(self, kind: str) -> tuple:
        var = lo = hi = None
        for _ in range(2):
            if self.accept("_"):
                low = self.parse_script()
                if low[0] == "rel" and low[1] == ("=",) and low[2][0][0] == "sym":
                    var, lo = low[2][0][1], low[2][1]
                else:
                    raise _ParseError("unsupported sum bounds")
            elif self.accept("^"):
                hi = self.parse_script()
        if var is None or hi is None:
            raise _ParseError("sum needs bounds")
        return ("sum", kind, var, lo, hi, self.parse_term())

    def parse_environment(self) -> tuple:
        env = self.read_braced_name()
        if env in ("array", "tabular") and self.at("{"):
            self.read_braced_name()
        if env not in ("pmatrix", "bmatrix", "matrix", "vmatrix", "Bmatrix", "smallmatrix", "array"):
            raise _ParseError(f"unsupported environment {env}")
        rows, row = [], []
        while True:
            if self.at(r"\end"):
                self.i += 1
                self.read_braced_name()
                break
            if self.peek()[0] == "end":
                raise _ParseError("unclosed environment")
            if self.accept("&"):
                continue
            if self.accept("\\\\"):
                if row:
                    rows.append(tuple(row))
                row = []
                continue
            if self.peek()[1] in (r"\hline",):
                self.i += 1
                continue
            row.append(self.parse_relation())
        if row:
            rows.append(tuple(row))
        if not rows or len({len(r) for r in rows}) != 1:
            raise _ParseError("ragged matrix")
        node = ("matrix", tuple(rows))
        return ("call", "det", (node,)) if env == "vmatrix" else node

    def read_braced_name(self) -> str:
        self.expect("{")
        name = ""
        while not self.at("}"):
            if self.peek()[0] == "end":
                raise _ParseError("unclosed name")
            name += self.take()[1]
        self.i += 1
        return name


def _letter(c: str) -> tuple:
    if c == "e":
        return ("const", "e")
    if c == "i":
        return ("const", "i")
    return ("sym", c)


def _word_node(word: str) -> tuple:
    node = _letter(word[-1])
    for c in reversed(word[:-1]):
        node = _mul(_letter(c), node)
    return node


def _key(node) -> str:
    """A short stable string for a subtree, used to name symbols built from it."""
    if node[0] == "num":
        return str(node[1])
    if node[0] in ("sym", "const"):
        return node[1]
    return repr(node)


def _relation(ops: list[str], parts: list[tuple]) -> tuple:
    """Builds ("rel", ops, parts); `a \\approx b` keeps the exact side (`x \\approx 3` keeps 3)."""
    if "~" in ops:
        k = ops.index("~")
        if k == 0 and is_label(parts[0]) and len(parts) == 2:
            return parts[1]
        ops, parts = ops[:k], parts[: k + 1]
        if not ops:
            return parts[0]
    return ("rel", tuple(ops), tuple(parts))


def is_label(node) -> bool:
    """A name rather than a value: x, a_{37}, f(x), (p, q), |AB|, A:B, \\frac{NO}{BO}."""
    kind = node[0]
    if kind in ("sym", "idx"):
        return True
    if kind == "call" and node[1] == "abs":
        return is_label(node[2][0])
    if kind == "call":
        return node[1] not in WORD_FUNCS and all(is_label(a) for a in node[2])
    if kind in ("mul", "tuple", "ratio"):
        return all(is_label(a) for a in node[1])
    if kind == "div":
        return is_label(node[1]) and is_label(node[2])
    return False


def labelled_value(node) -> tuple | None:
    """The right side of `label = value` (or `label \\in S`), else None."""
    if node[0] == "rel" and len(node[1]) == 1 and node[1][0] in ("=", "in") and is_label(node[2][0]):
        return node[2][1]
    return None


@functools.lru_cache(maxsize=8192)
def _parse(s: str) -> tuple | None:
    """Tree of a normalised answer, or None when the small parser does not understand it."""
    if len(s) > MAX_ANSWER_CHARS or nesting_depth(s) > MAX_NESTING:
        return None
    parser = _Parser(s)
    try:
        return parser.parse_answer()
    except (_ParseError, RecursionError, ValueError, ZeroDivisionError, IndexError):
        return None


class _Answer(NamedTuple):
    tree: tuple
    textual: bool  # words such as "Evelyn" or "odd": compared as strings, not as o*d*d


@functools.lru_cache(maxsize=8192)
def read_answer(s: str) -> _Answer | None:
    tree = _parse(s)
    if tree is None:
        return None
    words = [w for w in re.findall(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}", s) if w.lower() not in _KNOWN_WORDS]
    return _Answer(tree, bool(words) and _has_word_product(tree))


_KNOWN_WORDS = WORD_FUNCS | set(_WORD_CONSTS) | CONNECTIVES


def _has_word_product(node) -> bool:
    """True if a run of 3+ plain letters became a product of symbols ("odd" -> o*d*d)."""
    if not isinstance(node, tuple):
        return False
    if node and node[0] == "idx":
        return False
    if node and node[0] == "rel" and is_label(node[2][0]):
        return any(_has_word_product(part) for part in node[2][1:])
    if node and node[0] == "mul":
        letters = 0
        for factor in node[1]:
            letters = letters + 1 if factor[0] in ("sym", "const") and len(factor[1]) == 1 else 0
            if letters >= 3:
                return True
    return any(_has_word_product(child) for child in node if isinstance(child, tuple))
