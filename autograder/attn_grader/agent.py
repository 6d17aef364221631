"""The student's side of a check: runs the student's code on the check's inputs and sends
the results back by value. Everything that crosses is plain data (:func:`encode` /
:func:`decode`): JSON for the structure, ``safetensors`` for the tensors; nothing the
student's process sends is ever unpickled by the grading side.

This file is self-contained (the standard library, torch, numpy, safetensors; cloudpickle
only to unpack objects the checks lend), because under grading it is all of the grading
code that the student's kernel gets: ``attn-course grade`` writes its source into the
sandbox as an IPython start-up file, and the checks, references and scores stay outside
(:mod:`attn_grader.remote` is the other side). In a notebook run outside grading, and in
the project's tests, the same agent runs in-process behind a channel that still encodes
and decodes every message, so checks meet the same semantics everywhere.

A message is ``(header, blob)``: ``header`` a JSON-able dict, ``blob`` the bytes of one
safetensors file holding the message's tensors (``b""`` when there are none).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import sys
import traceback

import numpy as np
import torch

PROTOCOL = 1
COMM_TARGET = "attn_grader.agent"
#: Exceptions re-raised under their own type on the grading side; any other type is
#: re-raised as a :class:`StudentError` that carries the original type's name.
BUILTIN_ERRORS = {
    name: getattr(builtins, name) for name in (
        "NotImplementedError", "TypeError", "ValueError", "RuntimeError", "IndexError",
        "KeyError", "AttributeError", "NameError", "ZeroDivisionError", "AssertionError",
        "OverflowError", "RecursionError", "MemoryError", "ArithmeticError", "LookupError",
        "StopIteration", "UnboundLocalError", "ImportError", "ModuleNotFoundError",
        "NotADirectoryError", "FileNotFoundError", "PermissionError", "OSError",
        "Exception")
}
MAX_DEPTH = 32
MAX_ITEMS = 200_000
_SAFE_DTYPES = {
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool,
}


class WireError(ValueError):
    """A message that cannot be encoded or read."""


# --------------------------------------------------------------------------- the codec


class Encoder:
    """Turns values into a JSON tree plus named tensors. ``handle`` is called for anything
    that cannot travel by value (it returns a JSON node or raises :class:`WireError`)."""

    def __init__(self, handle=None):
        self.tensors: dict[str, torch.Tensor] = {}
        self.handle = handle
        self.items = 0

    def tensor(self, t: torch.Tensor) -> str:
        if t.layout != torch.strided or t.device.type != "cpu" or t.is_quantized:
            raise WireError(f"a tensor with layout {t.layout} on {t.device} cannot be read")
        data = t.detach()
        if data.dtype not in _SAFE_DTYPES:
            raise WireError(f"a tensor of dtype {data.dtype} cannot be read")
        key = f"t{len(self.tensors)}"
        self.tensors[key] = data.contiguous().clone()
        return key

    def __call__(self, value, depth: int = 0):
        self.items += 1
        if depth > MAX_DEPTH or self.items > MAX_ITEMS:
            raise WireError("the value is nested too deeply or has too many parts")
        if value is None or type(value) in (bool, str):
            return value
        if type(value) is int:
            return value if abs(value) < 2**53 else {"int": str(value)}
        if type(value) is float:
            return {"f": repr(value)}
        if isinstance(value, torch.Tensor):
            node = {"T": self.tensor(value), "rg": bool(value.requires_grad),
                    "param": isinstance(value, torch.nn.Parameter)}
            grad = value.grad if value.is_leaf else None
            if isinstance(grad, torch.Tensor):
                node["grad"] = self.tensor(grad)
            return node
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            return {"nd": self.tensor(torch.from_numpy(np.ascontiguousarray(value)))}
        if isinstance(value, np.generic) and value.dtype.kind in "biuf":
            return {"np": value.dtype.name, "v": repr(value.item())}
        if isinstance(value, torch.dtype):
            return {"dtype": str(value).removeprefix("torch.")}
        if isinstance(value, torch.Size):
            return {"size": [int(n) for n in value]}
        if type(value) is tuple:
            return {"tuple": [self(v, depth + 1) for v in value]}
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            return {"ntuple": type(value).__name__, "fields": list(value._fields),
                    "v": [self(v, depth + 1) for v in value]}
        if type(value) is list:
            return {"list": [self(v, depth + 1) for v in value]}
        if isinstance(value, dict) and type(value).__module__ in ("builtins", "collections"):
            return {"dict": [[self(k, depth + 1), self(v, depth + 1)] for k, v in value.items()]}
        if type(value) is slice:
            return {"slice": [self(value.start, depth + 1), self(value.stop, depth + 1),
                              self(value.step, depth + 1)]}
        if value is Ellipsis:
            return {"ellipsis": True}
        if type(value) is bytes:
            return {"bytes": self.tensor(torch.frombuffer(bytearray(value), dtype=torch.uint8))
                    if value else None}
        if self.handle is not None:
            return self.handle(value)
        raise WireError(f"a {type(value).__name__} cannot be sent")

    def finish(self) -> bytes:
        if not self.tensors:
            return b""
        from safetensors.torch import save

        return save(self.tensors)


def load_tensors(blob: bytes) -> dict[str, torch.Tensor]:
    if not blob:
        return {}
    from safetensors.torch import load

    try:
        return load(bytes(blob))
    except Exception as exc:  # safetensors raises its own error types
        raise WireError(f"unreadable tensor data ({type(exc).__name__})") from None


class Decoder:
    """The inverse of :class:`Encoder`; ``handle(node)`` rebuilds what the sender could not
    send by value. Tensors come back as new plain tensors (``rg`` restores requires_grad,
    ``grad`` the ``.grad`` of a leaf)."""

    def __init__(self, tensors: dict[str, torch.Tensor], handle=None):
        self.tensors, self.handle, self.items = tensors, handle, 0

    def tensor(self, key) -> torch.Tensor:
        if type(key) is not str or key not in self.tensors:
            raise WireError("a tensor is missing from the message")
        return self.tensors[key].clone()

    def __call__(self, node, depth: int = 0):
        self.items += 1
        if depth > MAX_DEPTH or self.items > MAX_ITEMS:
            raise WireError("the value is nested too deeply or has too many parts")
        if node is None or type(node) in (bool, str, int):
            return node
        if type(node) is float:  # JSON numbers we did not write
            return node
        if type(node) is not dict or len(node) == 0:
            raise WireError(f"unexpected {type(node).__name__} in a message")
        kind = next(iter(node))
        if kind == "T":
            t = self.tensor(node["T"])
            if node.get("rg") and (t.is_floating_point() or t.is_complex()):
                t.requires_grad_(True)
            if "grad" in node:
                t.grad = self.tensor(node["grad"])
            return t
        if kind == "f":
            return float(node["f"])
        if kind == "int":
            return int(node["int"])
        if kind == "nd":
            return self.tensor(node["nd"]).numpy()
        if kind == "np":
            return np.dtype(node["np"]).type(float(node["v"]) if "." in node["v"] or "e" in
                                             node["v"] or "n" in node["v"] else int(node["v"]))
        if kind == "dtype":
            dtype = getattr(torch, str(node["dtype"]), None)
            if not isinstance(dtype, torch.dtype):
                raise WireError("unknown dtype")
            return dtype
        if kind == "size":
            return torch.Size([int(n) for n in node["size"]])
        if kind == "tuple":
            return tuple(self(v, depth + 1) for v in node["tuple"])
        if kind == "ntuple":
            import collections

            fields = [str(f) for f in node["fields"]]
            cls = collections.namedtuple(str(node["ntuple"]) or "Result", fields)
            return cls(*(self(v, depth + 1) for v in node["v"]))
        if kind == "list":
            return [self(v, depth + 1) for v in node["list"]]
        if kind == "dict":
            return {self(k, depth + 1): self(v, depth + 1) for k, v in node["dict"]}
        if kind == "slice":
            return slice(*(self(v, depth + 1) for v in node["slice"]))
        if kind == "ellipsis":
            return Ellipsis
        if kind == "bytes":
            return b"" if node["bytes"] is None else bytes(self.tensor(node["bytes"]).numpy())
        if self.handle is not None:
            return self.handle(node)
        raise WireError(f"unexpected {kind!r} in a message")


def dumps(header: dict) -> str:
    return json.dumps(header, allow_nan=False, separators=(",", ":"))


def tensors_of(value) -> list[torch.Tensor]:
    """The tensors in a (nested) value, in the order :class:`Encoder` meets them."""
    found: list[torch.Tensor] = []

    def walk(v, depth=0):
        if depth > MAX_DEPTH:
            return
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x, depth + 1)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k, depth + 1)
                walk(x, depth + 1)

    walk(value)
    return found


def rng_seed() -> int:
    """A seed derived from the caller's torch RNG state without advancing it: a check that
    seeds before building the student's module gets the same module every time, wherever
    the module is built."""
    digest = hashlib.blake2b(torch.random.get_rng_state().numpy().tobytes(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


# --------------------------------------------------------------------------- the agent


class Agent:
    """Holds the student's objects the checks refer to (handles) and the autograd graphs of
    calls whose results may be differentiated later (slots); answers one request at a time.

    ``namespace`` is a function returning the student's namespace (IPython's ``user_ns``)."""

    def __init__(self, namespace=dict, ip=None):
        self.namespace, self.ip = namespace, ip
        self.objects: dict[int, object] = {}
        self.ids: dict[int, int] = {}  # id(obj) -> handle
        self.slots: dict[int, tuple[list, list]] = {}
        self.counter = 0
        self.baseline = _hooks_now(ip)
        self.alerts: list[str] = []
        self.methods = _own_methods()

    # ---- handles

    def _handle(self, obj) -> dict:
        h = self.ids.get(id(obj))
        if h is None or self.objects.get(h) is not obj:
            self.counter += 1
            h = self.counter
            self.objects[h], self.ids[id(obj)] = obj, h
        kind = type(obj)
        return {"h": h, "type": getattr(kind, "__qualname__", kind.__name__),
                "tid": id(kind), "callable": callable(obj),
                "module": isinstance(obj, torch.nn.Module)}

    def _resolve(self, node) -> object:
        if "ref" in node:
            h = node["ref"]
            if h not in self.objects:
                raise WireError("the check refers to an object that no longer exists")
            if "method" in node:
                return getattr(self.objects[h], str(node["method"]))
            return self.objects[h]
        raise WireError(f"unexpected {next(iter(node))!r} in a request")

    def _lent(self, blob: bytes):
        import pickle

        import cloudpickle  # noqa: F401 (registers what cloudpickle's pickles need)

        return pickle.loads(blob)  # noqa: S301 - the grader's own data, never the student's

    # ---- requests

    def handle(self, header: dict, blob: bytes) -> tuple[dict, bytes]:
        try:
            tensors = load_tensors(blob)
            dec = Decoder(tensors, self._resolve)
            op = header.get("op")
            method = getattr(self, f"op_{op}", None)
            if method is None:
                raise WireError(f"unknown request {op!r}")
            enc = Encoder(self._handle)
            reply = method(header, dec, enc)
            return {"ok": True, **reply}, enc.finish()
        except KeyboardInterrupt:
            return {"ok": False, "error": {"type": "KeyboardInterrupt",
                                           "message": "interrupted"}}, b""
        except BaseException as exc:  # noqa: BLE001 - anything the student's code raises
            kind, message = _describe(exc)
            tb = "".join(traceback.format_exception(exc)[-6:])[-4000:]
            return {"ok": False, "error": {"type": kind, "message": message, "tb": tb,
                                           "wire": isinstance(exc, WireError)}}, b""

    def op_hello(self, header, dec, enc):
        return {"protocol": PROTOCOL, "torch": torch.__version__}

    def op_lookup(self, header, dec, enc):
        name = str(header["name"])
        ns = self.namespace()
        if name not in ns:
            raise NameError(f"name {name!r} is not defined")
        return {"value": enc(ns[name])}

    def op_lend(self, header, dec, enc):
        data = dec(header["pickle"])
        if type(data) is not bytes:
            raise WireError("a lent object arrived without its data")
        return {"value": enc(self._lent(data))}

    def op_getattr(self, header, dec, enc):
        import inspect
        import types

        obj, name = dec(header["target"]), str(header["name"])
        value = getattr(obj, name)
        if inspect.ismethod(value) and value.__self__ is obj and name not in getattr(
                obj, "__dict__", {}) and isinstance(inspect.getattr_static(type(obj), name, None),
                                                    types.FunctionType):
            return {"method": True}  # a method of its class: the caller calls it by name
        return {"value": enc(value)}

    def op_build(self, header, dec, enc):
        """``cls(*args)``, then ``load_state_dict(state, strict=False)`` and ``eval()``: what
        a check does to build the student's module with reference weights, in one request.
        A step that fails is named in the reply."""
        cls, args, state = dec(header["target"]), dec(header["args"]), dec(header["state"])
        step = "build"
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(header.get("seed", 0)))
                start = torch.random.get_rng_state()
                obj = cls(*args)
                rng_used = not torch.equal(start, torch.random.get_rng_state())
            step = "load"
            if not hasattr(obj, "load_state_dict"):
                return {"step": "module", "rng_used": rng_used}
            result = obj.load_state_dict(state, strict=False)
            unexpected = [str(k) for k in getattr(result, "unexpected_keys", [])]
            step = "eval"
            obj.eval()
        except Exception as exc:  # the student's code raised: say at which step
            kind, message = _describe(exc)
            return {"step": step, "error": {"type": kind, "message": message}}
        return {"value": enc(obj), "unexpected": unexpected, "rng_used": rng_used}

    def op_setattr(self, header, dec, enc):
        setattr(dec(header["target"]), str(header["name"]), dec(header["value"]))
        return {}

    def op_getitem(self, header, dec, enc):
        return {"value": enc(dec(header["target"])[dec(header["key"])])}

    def op_len(self, header, dec, enc):
        return {"value": len(dec(header["target"]))}

    def op_iter(self, header, dec, enc):
        items = []
        for item in dec(header["target"]):
            items.append(item)
            if len(items) > 100_000:
                raise WireError("the iterable does not end")
        return {"value": enc(items)}

    def op_release(self, header, dec, enc):
        self.objects.clear()
        self.ids.clear()
        self.slots.clear()
        return {}

    def op_call(self, header, dec, enc):
        target = dec(header["target"])
        args, kwargs = dec(header["args"]), dec(header["kwargs"])
        inputs = tensors_of((args, kwargs))
        before = [(t._version, t.requires_grad) for t in inputs]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(header.get("seed", 0)))
            start = torch.random.get_rng_state()
            with torch.set_grad_enabled(bool(header.get("grad"))):
                out = target(*args, **kwargs)
            rng_used = not torch.equal(start, torch.random.get_rng_state())
        value = enc(out)
        outputs = tensors_of(out)
        differentiable = [bool(t.requires_grad) for t in outputs]
        changed = []
        for i, (t, (version, rg)) in enumerate(zip(inputs, before)):
            if t._version != version or t.requires_grad != rg:
                changed.append([i, t.detach(), bool(t.requires_grad)])
        reply = {"value": value, "outputs_rg": differentiable, "changed": enc(changed),
                 "rng_used": rng_used}
        if header.get("track") and any(differentiable):
            self.counter += 1
            self.slots[self.counter] = (inputs, outputs)
            reply["slot"] = self.counter
        return reply

    def op_backward(self, header, dec, enc):
        inputs, outputs = self.slots.pop(int(header["slot"]))
        grads = dec(header["grads"])
        pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None and o.requires_grad]
        for t in inputs:
            if t.requires_grad and t.is_leaf:
                t.grad = None
        if pairs:
            # the same gradients as autograd.backward(outputs, grads), which imports sympy
            # (0.3-1 s) the first time it is handed explicit gradients
            # (enabled: in-process, this runs inside the caller's own backward pass)
            with torch.enable_grad():
                sum((o * g.to(o.dtype)).sum() for o, g in pairs).backward()
        return {"grads": enc([t.grad if t.requires_grad and t.is_leaf else None
                              for t in inputs])}

    def op_inspect(self, header, dec, enc):
        """What in the kernel's machinery was replaced or added since the agent started: a
        reviewer's hint (the score never depends on it)."""
        now = _hooks_now(self.ip)
        found = sorted(f"replaced or added {name}" for name, ident in now.items()
                       if self.baseline.get(name) != ident)
        found += [f"replaced the grading agent's {name}" for name, ident in _own_methods().items()
                  if self.methods.get(name) != ident]
        return {"replaced": found, "alerts": list(self.alerts)}

    def watch(self, hidden: list[str], shown: list[str]) -> None:
        """Note (never block: the sandbox does that) attempts to use the network or to
        reach files under ``hidden`` (the grader's folders) other than those under
        ``shown``. An audit hook, which cannot be removed once added."""
        import os
        import socket

        hidden = [os.path.abspath(h) for h in hidden]
        shown = [os.path.abspath(s) for s in shown]
        alerts = self.alerts
        inet = (socket.AF_INET, socket.AF_INET6)

        def outside(path) -> bool:
            try:
                path = os.path.abspath(os.fsdecode(path))
            except (TypeError, ValueError):
                return False
            return any(path == h or path.startswith(h + os.sep) for h in hidden) and not any(
                path == s or path.startswith(s + os.sep) for s in shown)

        def hook(event, args):
            if len(alerts) >= 20:
                return
            if event in ("open", "os.listdir", "os.scandir") and args and isinstance(
                    args[0], str | bytes) and outside(args[0]):
                alerts.append(f"tried to reach {os.fsdecode(args[0])[:200]} (the grader's "
                              "files, outside its sandbox)")
            elif event in ("socket.connect", "socket.bind", "socket.sendto") and args and \
                    getattr(args[0], "family", None) in inet:
                alerts.append(f"tried to use the network ({event} {str(args[-1])[:100]})")

        sys.addaudithook(hook)


def _describe(exc: BaseException) -> tuple[str, str]:
    try:
        message = str(exc)[:4000]
    except Exception:  # a student's exception whose __str__ raises
        message = "(the exception's message could not be read)"
    return type(exc).__name__, message


def _own_methods() -> dict[str, int]:
    return {name: id(fn) for name, fn in vars(Agent).items() if callable(fn)}


def _from_notebook(obj) -> bool:
    """Whether a callable was written in the notebook (not by a library such as
    matplotlib or autoreload, which register IPython hooks of their own)."""
    fn = getattr(obj, "__func__", obj)
    call = vars(type(fn)).get("__call__")  # a callable object's method, if any
    code = getattr(fn, "__code__", None) or getattr(call, "__code__", None)
    filename = getattr(code, "co_filename", "") or ""
    module = getattr(fn, "__module__", None) or getattr(type(obj), "__module__", "")
    return (module == "__main__" or "ipykernel_" in filename
            or filename.startswith("<ipython-input"))


def _hooks_now(ip=None) -> dict[str, object]:
    """What could rewrite or forge what a cell shows, or fake a comparison: hooks written in
    the notebook, and the identity of hooks and functions that are replaced, not added to.
    ``ip``: the IPython shell (``get_ipython`` is not a builtin outside a cell's run)."""
    state: dict[str, object] = {}
    if ip is not None:
        for name in ("input_transformers_cleanup", "input_transformers_post",
                     "ast_transformers"):
            state[f"an IPython {name} entry"] = tuple(
                id(x) for x in getattr(ip, name, []) if _from_notebook(x))
        for event, callbacks in ip.events.callbacks.items():
            state[f"an IPython '{event}' event callback"] = tuple(
                id(cb) for cb in callbacks if _from_notebook(cb))
        for what, obj, method in (("displayhook", ip.displayhook, "__call__"),
                                  ("display publisher", ip.display_pub, "publish")):
            state[f"IPython's {what}"] = (id(obj), id(type(obj)),
                                          id(getattr(type(obj), method, None)),
                                          id(vars(obj).get(method)))
        state["IPython's run_cell"] = id(getattr(type(ip), "run_cell", None))
        state["IPython's run_cell (on the shell)"] = id(vars(ip).get("run_cell"))
    state["sys.displayhook"] = id(sys.displayhook)
    for name in ("allclose", "isclose", "equal", "softmax", "matmul", "manual_seed"):
        state[f"torch.{name}"] = id(getattr(torch, name))
    for name in ("__eq__", "__repr__", "backward", "clone", "detach", "numpy"):
        state[f"torch.Tensor.{name}"] = id(getattr(torch.Tensor, name))
    state["torch.nn.Module.__call__"] = id(torch.nn.Module.__call__)
    state["numpy.allclose"] = id(np.allclose)
    state["math.isclose"] = id(math.isclose)
    for name in ("isinstance", "type", "print", "__import__", "getattr", "len"):
        state[f"builtins.{name}"] = id(getattr(builtins, name))
    return state


def install(cap: int = 1 << 20) -> Agent:
    """In a kernel: answer the grading side's requests on comm ``COMM_TARGET``, and cap each
    cell's printed output at ``cap`` bytes per stream. Called once, before any student code
    (an IPython start-up file)."""
    ip = get_ipython()  # noqa: F821 (defined inside IPython)
    agent = Agent(lambda: ip.user_ns, ip)

    def on_open(comm, open_msg):
        def on_msg(msg):
            header = msg["content"]["data"]
            buffers = msg.get("buffers") or [b""]
            reply, blob = agent.handle(header, bytes(buffers[0]))
            reply["id"] = header.get("id")
            comm.send(reply, buffers=[blob] if blob else None)

        comm.on_msg(on_msg)

    manager = getattr(ip.kernel, "comm_manager", None)
    if manager is None:
        import comm

        manager = comm.get_comm_manager()
    manager.register_target(COMM_TARGET, on_open)
    import os

    watch = os.environ.get("ATTN_GRADING_WATCH")
    if watch:
        try:
            spec = json.loads(watch)
            agent.watch(list(spec.get("hidden", [])), list(spec.get("shown", [])))
        except (ValueError, TypeError, AttributeError):
            pass
    resets = [_cap_stream(s, cap) for s in (sys.stdout, sys.stderr)]
    for reset in resets:
        ip.events.register("pre_run_cell", reset)
    agent.baseline = _hooks_now(ip)
    return agent


def _cap_stream(stream, cap: int):
    written = {"n": 0, "told": False}
    write = stream.write

    def capped(text):
        room = cap - written["n"]
        written["n"] += len(text)
        if len(text) <= room:
            return write(text)
        if room > 0:
            write(text[:room])
        if not written["told"]:
            written["told"] = True
            write(f"\n[output of this cell cut at {cap} bytes by the grader]\n")
        return len(text)

    def reset(*_):
        written["n"], written["told"] = 0, False

    stream.write = capped
    return reset
