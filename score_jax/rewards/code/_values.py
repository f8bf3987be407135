"""Values across the boundary: plain data to and from JSON, shared by the sandbox (which serves calls) and the judge.

Worker side: standard library and relative imports only (see _worker).
"""

from __future__ import annotations

import builtins
from _json import encode_basestring_ascii as _encode_str

_MAX_DEPTH = 100  # nesting of one value
_MAX_NODES = 1_000_000  # items in one value
MAX_LINE = 4 << 20  # bytes of one message between judge and sandbox; a longer reply is malformed
_MAX_MESSAGE = 300  # characters of a recorded exception message
_SMALL_INT = 1 << 63  # larger ints travel as hex (no 4300-digit str limit)


class Unserialisable(Exception):
    """A value with no plain-data form: too large, too deep or cyclic."""


class SandboxFailure(BaseException):
    """The sandbox broke the protocol or ended during a call; BaseException so test code can't catch it."""


class ProgramError(Exception):
    """Re-raised in tests for a program exception whose type is not a builtin exception."""


class _Handle:
    """What test code holds for a program object with no plain-data form: calls and attributes only."""

    __slots__ = ("_hid", "_trace")

    def __init__(self, hid, trace):
        self._hid = hid
        self._trace = trace

    def __call__(self, *args, **kwargs):
        return self._trace.call(self._hid, args, kwargs)

    def __getattr__(self, name):
        if name in ("_hid", "_trace"):
            raise AttributeError(name)
        return self._trace.getattr(self._hid, name)

    def __bool__(self):
        raise TypeError("the truth value of an opaque program object is not trusted; return plain data")

    def __repr__(self):
        return f"<program object #{self._hid}>"


class Boundary:
    """What both sides share: values to plain data (canon) and back (materialise)."""

    def __init__(self):
        self.handles = {}  # hid -> _Handle, so one program object is one stand-in

    def canon(self, value, role):
        """`value` as JSON-able plain data; role "arg" (test to program) or "result" (back)."""
        return self._canon(value, role, 0, [_MAX_NODES])

    def _canon(self, x, role, depth, budget):
        budget[0] -= 1
        if budget[0] < 0 or depth > _MAX_DEPTH:
            raise Unserialisable("value too large or too deeply nested to compare")
        t = type(x)
        if x is None or t is bool or t is str or t is float:
            return x
        if t is int:
            return x if -_SMALL_INT < x < _SMALL_INT else ["I", format(x, "x")]
        tag = _TAGS.get(t)
        if tag is not None:
            d = depth + 1
            if t is dict:
                out = ["d"]
                for k, v in x.items():
                    out.append(self._canon(k, role, d, budget))
                    out.append(self._canon(v, role, d, budget))
                return out
            return [tag] + [self._canon(v, role, d, budget) for v in x]
        if t is bytes or t is bytearray:
            return ["b" if t is bytes else "y", x.decode("latin-1")]
        if t is complex:
            return ["c", x.real, x.imag]
        if t is range:
            return ["r", x.start, x.stop, x.step]
        for base, plain in _PLAIN_OF_SUBCLASS:
            if issubclass(t, base):  # the builtin value it holds; its own __eq__ is dropped
                return self._canon(plain(x), role, depth, budget)
        if t.__module__ == "numpy" and hasattr(t, "tolist"):
            return self._canon(x.tolist(), role, depth, budget)
        return self._opaque(x, role)

    def _opaque(self, x, role):
        if type(x) is _Handle:
            return ["h", x._hid]
        if role == "result":
            return self.new_program_object(x)
        # Test code never enters the sandbox, not even as a callback: a test that passes one fails.
        raise Unserialisable(f"a {type(x).__name__} of the test cannot be passed to the program; pass plain data")

    def new_program_object(self, x):
        raise SandboxFailure("only the sandbox holds program objects")

    def handle(self, hid):
        if hid not in self.handles:
            self.handles[hid] = _Handle(hid, self)
        return self.handles[hid]

    def materialise(self, c, for_program=False, depth=0):
        """Plain data back to fresh builtins; handles to stand-ins (or, for the program, the real object).

        Raises ValueError on anything malformed, too deep included (the judge reads untrusted replies).
        """
        t = type(c)
        if c is None or t is bool or t is int or t is float or t is str:
            return c
        if t is not list or not c or depth > _MAX_DEPTH:
            raise ValueError(f"malformed value {c!r:.80}")
        tag, items = c[0], c[1:]
        if tag in _BUILD:
            try:
                return _BUILD[tag](self.materialise(v, for_program, depth + 1) for v in items)
            except TypeError as e:  # an unhashable item of a set
                raise ValueError(f"malformed value: {e}") from None
        if tag == "d":
            if len(items) % 2:
                raise ValueError("malformed dict")
            values = [self.materialise(v, for_program, depth + 1) for v in items]
            try:
                return dict(zip(values[::2], values[1::2]))
            except TypeError as e:  # an unhashable key
                raise ValueError(f"malformed value: {e}") from None
        (arg,) = items[:1] if len(items) == 1 else (None,)
        if tag == "I" and type(arg) is str and len(arg) < 1 << 20:
            return int(arg, 16)
        if tag == "b" and type(arg) is str:
            return arg.encode("latin-1")
        if tag == "y" and type(arg) is str:
            return bytearray(arg.encode("latin-1"))
        if tag == "h" and type(arg) is int:
            return self.program_object(arg) if for_program else self.handle(arg)
        if tag == "c" and len(items) == 2 and all(type(v) is float for v in items):
            return complex(items[0], items[1])
        if tag == "r" and len(items) == 3 and all(type(v) is int for v in items):
            return range(*items)
        raise ValueError(f"malformed value {c!r:.80}")

    def program_object(self, hid):
        raise SandboxFailure("the judge never holds program objects")

    def decode(self, result):
        """A reply to the test's side: (value, None), or (None, the exception to raise).

        Raises ValueError on a malformed reply.
        """
        if type(result) is list and len(result) == 2 and result[0] == "v":
            return self.materialise(result[1]), None
        if type(result) is list and len(result) == 3 and result[0] == "x":
            return None, _program_exception(result[1], result[2])
        raise ValueError(f"malformed result {result!r:.80}")


_TAGS = {list: "l", tuple: "t", set: "s", frozenset: "f", dict: "d"}
_BUILD = {"l": list, "t": tuple, "s": set, "f": frozenset}
# Base-class methods, so a subclass's overrides (of __iter__, __str__, ...) are not consulted.
_PLAIN_OF_SUBCLASS = (
    (int, int.__int__),
    (float, float.__float__),
    (str, str.__str__),
    (bytes, bytes.__bytes__),
    (complex, complex.__complex__),
    (list, lambda x: list(list.__iter__(x))),
    (tuple, lambda x: tuple(tuple.__iter__(x))),
    (dict, lambda x: dict(dict.items(x))),
    (frozenset, lambda x: frozenset(frozenset.__iter__(x))),
    (set, lambda x: set(set.__iter__(x))),
)


def _program_exception(name, message):
    """The exception a test sees for a recorded one: the builtin type of that name, except
    StopIteration (which would silently end a `map` or a generator in the test), else ProgramError."""
    cls = getattr(builtins, name, None) if type(name) is str else None
    if (
        isinstance(cls, type)
        and issubclass(cls, Exception)
        and not issubclass(cls, (StopIteration, StopAsyncIteration))
    ):
        try:
            return cls(message)
        except Exception:
            pass
    return ProgramError(f"{name}: {message}")


def dump(x):
    """Compact JSON text of plain data, for the messages between judge and sandbox."""
    t = type(x)
    if t is str:
        return _encode_str(x)
    if t is list:
        return "[" + ",".join([dump(v) for v in x]) + "]"
    if t is int:
        return int.__repr__(x)
    if t is float:
        if x != x:
            return "NaN"
        if x in (float("inf"), float("-inf")):
            return "Infinity" if x > 0 else "-Infinity"
        return float.__repr__(x)
    if x is None:
        return "null"
    if t is bool:
        return "true" if x else "false"
    raise Unserialisable(f"not plain data: {t.__name__}")


def describe(e):
    """(type name, message) of an exception, defensively: both may run program code."""
    try:
        name = type(e).__name__
        name = name if type(name) is str else "Exception"
    except BaseException:
        name = "Exception"
    try:
        message = str(e)
        message = message[:_MAX_MESSAGE] if type(message) is str else ""
    except BaseException:
        message = ""
    return name, message


def builtins_for_tests():
    """Builtins for test code, with an `import random` of its own (seeded), so the test's draws
    are the same on every run."""
    table = dict(builtins.__dict__)
    real_import = builtins.__import__
    private = []

    def test_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "random" and level == 0:
            if not private:
                import random

                rng = random.Random(0)
                module = type(random)("random")
                for key, value in vars(random).items():
                    bound_to_default = getattr(value, "__self__", None) is random._inst
                    module.__dict__[key] = getattr(rng, key) if bound_to_default else value
                private.append(module)
            return private[0]
        return real_import(name, globals, locals, fromlist, level)

    table["__import__"] = test_import
    return table
