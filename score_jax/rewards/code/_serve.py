"""In the sandbox: the program, then a loop that answers the judge's calls into it.

No test code runs here: the judge (``_judge``) runs the tests in its own process and sends only
requests (a global's value, a call with plain-data arguments, an attribute read), one line each
on fd 3; the answers go back, one line each, on fd 4. So no frame, constant or local of a test,
and no expected value, is ever in this process for the program to find.

Worker side: standard library and relative imports only (see _worker).
"""

from __future__ import annotations

import builtins
import json
import os
import sys

from ._values import MAX_LINE, Boundary, describe, dump


class _Server(Boundary):
    """The program's side: calls the real objects, answers with plain data or a handle."""

    def __init__(self, program_globals):
        super().__init__()
        self._program = program_globals
        self._objects = []
        self._object_ids = {}

    def new_program_object(self, x):
        hid = self._object_ids.get(id(x))
        if hid is None:
            hid = self._object_ids[id(x)] = len(self._objects)
            self._objects.append(x)
        return ["h", hid]

    def program_object(self, hid):
        return self._objects[hid]

    def answer(self, request):
        kind = request[0]
        if kind == "g":
            name = request[1]
            if name not in self._program:
                return ["n"]
            if name in sys.stdlib_module_names:
                # Tests may use a module the program imported (MBPP's `math.isclose`): the judge
                # imports the real module of that name, whatever the program bound to it.
                return ["m"]
            value = self._program[name]
            return self._run(lambda: value)
        if kind == "c":
            _, hid, args, kwargs = request
            return self._run(
                lambda: self._objects[hid](*self.materialise(args, True), **self.materialise(kwargs, True))
            )
        _, hid, name = request
        return self._run(lambda: getattr(self._objects[hid], name))

    def _run(self, compute):
        try:
            value = compute()
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: they are answers
            return ["x", *describe(e)]
        try:
            return ["v", self.canon(value, "result")]
        except BaseException as e:
            return ["x", "TypeError", "result has no plain-data form: " + describe(e)[1]]


def _deny_network(event, args):
    """Audit hook where seccomp is unavailable: no sockets, DNS, ctypes or exec."""
    if event.startswith(("socket.", "ctypes.", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.")):
        raise PermissionError(f"{event} is not allowed in the sandbox")


def _send(message) -> None:
    data = (dump(message) + "\n").encode()
    if len(data) > MAX_LINE:
        data = (dump(["x", "TypeError", f"result too large ({len(data)} bytes)"]) + "\n").encode()
    while data:
        data = data[os.write(4, data) :]


def _exit() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(0)


def serve(job) -> None:
    """Runs the program, says whether it loaded, then answers requests until the judge closes fd 3."""
    program, setup, audit_hook = job
    if audit_hook:
        sys.addaudithook(_deny_network)
    try:
        code = compile(program, "<program>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as e:
        _send(["S", "{}: {}".format(*describe(e))])
        _exit()
    module = type(sys)("__candidate__")  # not __main__: `if __name__ == "__main__"` blocks don't run
    module.__dict__["__builtins__"] = builtins
    sys.modules[module.__name__] = module
    try:
        exec(setup, module.__dict__)  # MBPP programs may rely on the setup's imports
        exec(code, module.__dict__)
    except BaseException as e:
        _send(["P", *describe(e)])
        _exit()
    _send(["R"])
    server = _Server(module.__dict__)
    requests = os.fdopen(3, "rb", buffering=1 << 16)
    while line := requests.readline():
        try:
            reply = server.answer(json.loads(line))
        except BaseException as e:  # a request the program tampered with (it can read fd 3 too)
            reply = ["x", *describe(e)]
        _send(reply)
    _exit()
