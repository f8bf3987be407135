"""Phase A, in the sandbox: the program, then the stripped tests, recording every call into the program.

Worker side: standard library and relative imports only (see _worker).
"""

from __future__ import annotations

import builtins
import os
import sys

from ._values import Trace, builtins_for_tests, describe, dump


class _Recorder(Trace):
    """Phase A: runs the program for real and records every crossing."""

    def __init__(self, emit, program_globals):
        super().__init__()
        self._emit = emit
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

    def bind_global(self, namespace, name):
        if name not in self._program:
            result = ["n"]
        elif name in sys.stdlib_module_names:
            # Tests may use a module the program imported (MBPP's `math.isclose`). Both phases
            # import the real module of that name, whatever the program bound to it.
            result = ["m"]
            namespace[name] = __import__(name)
        else:
            value = self._program[name]
            result = self._run(lambda: value)
            if result[0] == "v":
                namespace[name] = self.deliver(result)
        self._emit(["g", name, result])

    def call(self, hid, args, kwargs):
        a, k = self.canon(args, "arg"), self.canon(kwargs, "arg")
        result = self._run(lambda: self._objects[hid](*self.materialise(a, True), **self.materialise(k, True)))
        self._emit(["c", hid, a, k, result])
        return self.deliver(result)

    def getattr(self, hid, name):
        result = self._run(lambda: getattr(self._objects[hid], name))
        self._emit(["a", hid, name, result])
        return self.deliver(result)

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
    """Audit hook of the last-resort tier: no inet sockets, DNS, ctypes or exec."""
    if event == "socket.__new__" and len(args) > 1 and args[1] == 1:  # AF_UNIX
        return
    if event.startswith(("socket.", "ctypes.", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.")):
        raise PermissionError(f"{event} is not allowed in the sandbox")


def record(job):
    """Phase A, in the sandboxed interpreter: program, then stripped tests; events to fd 3."""
    program, setup, names, units, site_paths, audit_hook = job
    sys.path.extend(site_paths)

    def emit(event):
        data = (dump(event) + "\n").encode()
        while data:
            data = data[os.write(3, data) :]

    if audit_hook:
        sys.addaudithook(_deny_network)
    tests = {"__builtins__": builtins_for_tests(), "__name__": "__test__"}
    try:
        code = compile(program, "<program>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as e:
        emit(["S", "{}: {}".format(*describe(e))])
        os._exit(0)
    exec(setup, tests)
    module = type(sys)("__candidate__")  # not __main__: `if __name__ == "__main__"` blocks don't run
    module.__dict__["__builtins__"] = builtins
    sys.modules[module.__name__] = module
    recorder = _Recorder(emit, module.__dict__)
    try:
        exec(setup, module.__dict__)  # MBPP programs may rely on the setup's imports
        exec(code, module.__dict__)
    except BaseException as e:
        emit(["P", *describe(e)])
    else:
        for name in names:
            recorder.bind_global(tests, name)
        for i, unit in enumerate(units):
            emit(["U", i])
            try:
                exec(unit, tests)
            except BaseException as e:
                emit(["E", i, *describe(e)])
        emit(["D"])
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(0)
