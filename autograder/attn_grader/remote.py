"""The student's code, seen from the checks: proxies that run it where it lives and bring
the results back by value.

A check is a plain function of the student's object. Under grading that object is a
:class:`RemoteObject`: calling it, reading its attributes, indexing or iterating it sends a
request to the :class:`~attn_grader.agent.Agent` in the student's (sandboxed) kernel, which
runs the student's code on copies of the check's inputs and answers with values: tensors,
numbers, tuples, lists, dicts; anything else (a module, a bound method) comes back as
another :class:`RemoteObject`. The check then compares and scores here, in the grading
process, where the student's code never runs.

What local calls would do is kept:

- gradients: a call made with gradients enabled is a node of this process's autograd graph
  (:class:`_RemoteCall`); ``backward()`` through its results sends the output gradients to
  the kernel, which back-propagates there (the student's parameters accumulate ``.grad``
  there, read back with ``dict(m.named_parameters())``) and returns the input gradients;
- inputs modified in place, or switched to ``requires_grad``, are modified here too, so
  ``expect_unmodified`` sees what the student's code did;
- the torch RNG: each call runs under a seed derived from this process's RNG state
  (:func:`attn_grader.agent.rng_seed`), so ``seeded(lambda: Module(...), s)`` builds the
  same module every time;
- identity: the same student object always comes back as the same proxy.

:class:`LoopbackChannel` runs the agent in this process, still encoding every message: it is
what notebooks use outside grading and what the project's tests use, so checks meet one
set of semantics everywhere. The kernel channel is ``attn_course.judge.KernelChannel``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import sys
from collections.abc import Iterator

import torch

from attn_grader import agent as wire


class StudentError(Exception):
    """An exception raised by the student's code whose type is not a builtin one; its class
    name is the original's (``type(exc).__name__`` reads as the student wrote it)."""


class StudentTimeout(Exception):
    """The student's code did not answer in time (it was interrupted)."""


class ChannelBroken(RuntimeError):
    """The student's kernel is gone or no longer answers: nothing more can be judged."""


_ERROR_TYPES: dict[str, type] = {}


def _raise_remote(error: dict):
    kind = str(error.get("type", "Exception"))
    message = str(error.get("message", ""))
    if kind == "KeyboardInterrupt":
        raise StudentTimeout(message or "interrupted")
    if error.get("wire"):
        raise StudentError(f"the grader could not read what the code returned: {message}")
    builtin = wire.BUILTIN_ERRORS.get(kind)
    if builtin is not None:
        raise builtin(message)
    name = re.sub(r"\W", "", kind)[:60] or "Exception"
    if name not in _ERROR_TYPES:
        _ERROR_TYPES[name] = type(name, (StudentError,), {})
    raise _ERROR_TYPES[name](message)


# --------------------------------------------------------------------------- channels


class Channel:
    """One conversation with one agent. Subclasses implement :meth:`exchange`."""

    def __init__(self):
        self.proxies: dict[int, RemoteObject] = {}
        self.methods: set[tuple[int, str]] = set()  # (type id, name): a method of that class
        self.anchor = torch.zeros((), requires_grad=True)  # see _RemoteCall
        self.requests = 0

    def exchange(self, header: dict, blob: bytes) -> tuple[dict, bytes]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # ---- encoding

    def _arg(self, obj):
        if isinstance(obj, RemoteMethod):
            return {"ref": self._arg(obj._target)["ref"], "method": obj._name}
        if isinstance(obj, RemoteObject):
            if obj._channel is not self:
                raise wire.WireError("an object of another student's kernel")
            return {"ref": obj._handle}
        raise wire.WireError(
            f"a {type(obj).__name__} of the grading side cannot be handed to the student's "
            "code: lend() it (attn_grader.framework.lend)")

    def _proxy(self, node) -> RemoteObject:
        h = node.get("h")
        if type(h) is not int:
            raise wire.WireError("a malformed reference in the reply")
        proxy = self.proxies.get(h)
        if proxy is None:
            tid = node.get("tid")
            proxy = self.proxies[h] = RemoteObject(
                self, h, str(node.get("type", "object"))[:200], bool(node.get("callable")),
                bool(node.get("module")), tid if type(tid) is int else None)
        return proxy

    def request(self, op: str, *, keep_rg: bool = True, **fields) -> dict:
        """Send one request; return the reply with its values decoded. Raises what the
        student's code raised."""
        enc = wire.Encoder(self._arg)
        header = {"op": op}
        for key, value in fields.items():
            header[key] = value if key in _RAW_FIELDS else enc(value)
        self.requests += 1
        reply, blob = self.exchange(header, enc.finish())
        if type(reply) is not dict or type(reply.get("ok")) is not bool:
            raise ChannelBroken("the student's kernel sent a malformed reply")
        if not reply["ok"]:
            error = reply.get("error")
            _raise_remote(error if type(error) is dict else {})
        decode = _Decoder(wire.load_tensors(blob), self._proxy, keep_rg)
        return {k: (decode(v) if k in _VALUE_FIELDS else v) for k, v in reply.items()}

    # ---- what a check can do with the student's objects

    def lookup(self, name: str):
        return self.request("lookup", name=name)["value"]

    def lend(self, obj):
        import cloudpickle

        _pickle_grading_code_by_value(cloudpickle)
        data = cloudpickle.dumps(obj)
        return self.request("lend", pickle=data)["value"]

    def release(self) -> None:
        """Forget every object handed out so far (after each check)."""
        self.request("release")
        self.proxies.clear()

    def call(self, target: RemoteObject | RemoteMethod, args: tuple, kwargs: dict):
        seed = wire.rng_seed()
        if not torch.is_grad_enabled():
            reply = self.request("call", target=target, args=args, kwargs=kwargs, grad=False,
                                 track=False, seed=seed)
            _after_call(args, kwargs, reply)
            return reply["value"]
        call = _Call(self, target, args, kwargs, seed)
        inputs = wire.tensors_of((args, kwargs))
        outputs = _RemoteCall.apply(call, self.anchor, *inputs)
        reply = call.reply
        _after_call(args, kwargs, reply)
        if not call.outputs:
            return reply["value"]
        return _replace_tensors(reply["value"], list(outputs))


    def getattr(self, target: RemoteObject, name: str):
        key = (target._tid, name)
        if target._tid is not None and key in self.methods:
            return RemoteMethod(target, name)
        reply = self.request("getattr", target=target, name=name)
        if reply.get("method") is True:
            if target._tid is not None:
                self.methods.add(key)
            return RemoteMethod(target, name)
        return reply["value"]

    def build(self, cls: RemoteObject, args: tuple, state: dict) -> dict:
        """``cls(*args)``, ``load_state_dict(state, strict=False)``, ``eval()`` in the
        student's process, in one request (see :meth:`attn_grader.agent.Agent.op_build`):
        ``{"value": module, "unexpected": [...]}``, or ``{"step": ..., "error": ...}``
        naming the step that failed."""
        reply = self.request("build", target=cls, args=args, state=state, seed=wire.rng_seed())
        if reply.get("rng_used") is True:
            torch.rand(())
        return reply


#: Request fields sent as they are (plain JSON); every other field is encoded as a value.
_RAW_FIELDS = {"name", "grad", "track", "seed", "slot"}
#: Reply fields holding encoded values.
_VALUE_FIELDS = {"value", "grads", "changed"}


class _Decoder(wire.Decoder):
    def __init__(self, tensors, handle, keep_rg: bool):
        super().__init__(tensors, handle)
        self.keep_rg = keep_rg

    def __call__(self, node, depth: int = 0):
        value = super().__call__(node, depth)
        if not self.keep_rg and isinstance(value, torch.Tensor) and value.requires_grad:
            value = value.detach()
        return value


class LoopbackChannel(Channel):
    """The agent in this process, behind the same encoding as a kernel: for notebooks run
    outside grading and for the project's tests. ``namespace`` plays the student's
    namespace (what :meth:`lookup` finds)."""

    def __init__(self, namespace: dict | None = None):
        super().__init__()
        self.namespace = dict(namespace or {})
        self.agent = wire.Agent(lambda: self.namespace)

    def exchange(self, header: dict, blob: bytes) -> tuple[dict, bytes]:
        text = wire.dumps(header)  # what a kernel would receive, and nothing else
        reply, out = self.agent.handle(json.loads(text), bytes(blob))
        return json.loads(wire.dumps(reply)), bytes(out)


# --------------------------------------------------------------------------- proxies


class RemoteObject:
    """A student's object that lives in the student's process (see the module docstring)."""

    __slots__ = ("_channel", "_handle", "_type", "_callable", "_module", "_tid")

    def __init__(self, channel: Channel, handle: int, type_name: str, is_callable: bool,
                 is_module: bool, tid: int | None = None):
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_callable", is_callable)
        object.__setattr__(self, "_module", is_module)
        object.__setattr__(self, "_tid", tid)

    def __call__(self, *args, **kwargs):
        if not self._callable:
            raise TypeError(f"'{self._type}' object is not callable")
        return self._channel.call(self, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._channel.getattr(self, name)

    def __setattr__(self, name: str, value) -> None:
        self._channel.request("setattr", target=self, name=name, value=value)

    def __getitem__(self, key):
        return self._channel.request("getitem", target=self, key=key)["value"]

    def __len__(self) -> int:
        value = self._channel.request("len", target=self)["value"]
        if type(value) is not int or value < 0:
            raise TypeError("len() of the student's object is not a non-negative int")
        return value

    def __iter__(self) -> Iterator:
        value = self._channel.request("iter", target=self)["value"]
        return iter(value if type(value) is list else [])

    def __repr__(self) -> str:
        return f"<the student's {self._type}>"

    def __deepcopy__(self, memo):
        raise TypeError("a student's object cannot be copied by the grading side")


class RemoteMethod:
    """A method of a student's object, called by name in the student's process (one request
    where fetching a bound method and calling it would take two)."""

    __slots__ = ("_target", "_name")

    def __init__(self, target: RemoteObject, name: str):
        self._target, self._name = target, name

    def __call__(self, *args, **kwargs):
        return self._target._channel.call(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<method {self._name} of the student's {self._target._type}>"


# --------------------------------------------------------------------------- autograd


class _Call:
    """One differentiable call: the request is made inside :class:`_RemoteCall`'s forward."""

    def __init__(self, channel, target, args, kwargs, seed):
        self.channel, self.target, self.args, self.kwargs = channel, target, args, kwargs
        self.seed = seed
        self.reply: dict = {}
        self.outputs: list[torch.Tensor] = []
        self.rg: list[bool] = []
        self.n_inputs = 0

    def run(self) -> list[torch.Tensor]:
        self.reply = self.channel.request(
            "call", keep_rg=False, target=self.target, args=self.args, kwargs=self.kwargs,
            grad=True, track=True, seed=self.seed)
        self.outputs = wire.tensors_of(self.reply["value"])
        rg = self.reply.get("outputs_rg")
        self.rg = [bool(x) for x in rg] if type(rg) is list and len(rg) == len(
            self.outputs) else [False] * len(self.outputs)
        return self.outputs


class _RemoteCall(torch.autograd.Function):
    """A call to the student's code as one autograd node of this process. The ``anchor``
    (a scalar that requires grad) makes outputs differentiable even when no input is, as
    when a module's own parameters are what the gradient flows to."""

    @staticmethod
    def forward(ctx, call: _Call, anchor, *inputs):
        call.n_inputs = len(inputs)
        outputs = call.run()
        ctx.call = call
        frozen = [o for o, rg in zip(outputs, call.rg) if not rg]
        if frozen:
            ctx.mark_non_differentiable(*frozen)
        return tuple(outputs) if outputs else anchor.new_zeros(())

    @staticmethod
    def backward(ctx, *grads):
        call = ctx.call
        slot = call.reply.get("slot")
        none = (None, None, *([None] * call.n_inputs))
        if type(slot) is not int:
            return none
        sent = [g if rg else None for g, rg in zip(grads, call.rg)]
        reply = call.channel.request("backward", slot=slot, grads=sent)
        back = reply.get("grads")
        if type(back) is not list or len(back) != call.n_inputs:
            raise ChannelBroken("the student's kernel sent malformed gradients")
        back = [g if isinstance(g, torch.Tensor) else None for g in back]
        return (None, None, *back)


def _replace_tensors(value, new: list[torch.Tensor]):
    """``value`` with its tensors replaced, in :func:`agent.tensors_of` order."""
    it = iter(new)

    def walk(v, depth=0):
        if isinstance(v, torch.Tensor):
            return next(it)
        if depth > wire.MAX_DEPTH:
            return v
        if type(v) is list:
            return [walk(x, depth + 1) for x in v]
        if type(v) is tuple:
            return tuple(walk(x, depth + 1) for x in v)
        if isinstance(v, tuple) and hasattr(v, "_fields"):
            return type(v)(*(walk(x, depth + 1) for x in v))
        if type(v) is dict:
            return {walk(k, depth + 1): walk(x, depth + 1) for k, x in v.items()}
        return v

    return walk(value)


def _after_call(args, kwargs, reply: dict) -> None:
    """Do to the check's tensors what the student's code did to its copies of them; and if
    it drew random numbers, advance this process's RNG too, so that the next call draws
    others (two calls of a module with dropout differ, as they would in one process)."""
    if reply.get("rng_used") is True:
        torch.rand(())
    changed = reply.get("changed")
    if type(changed) is not list or not changed:
        return
    inputs = wire.tensors_of((args, kwargs))
    with torch.no_grad():
        for entry in changed:
            if type(entry) is not list or len(entry) != 3 or type(entry[0]) is not int:
                continue
            index, value, rg = entry
            if not 0 <= index < len(inputs) or not isinstance(value, torch.Tensor):
                continue
            t = inputs[index]
            if value.shape == t.shape and value.dtype == t.dtype:
                t.copy_(value)
            else:
                t.data = value
            if t.is_leaf and bool(rg) != t.requires_grad and (t.is_floating_point() or not rg):
                t.requires_grad_(bool(rg))


# --------------------------------------------------------------------------- lending


def _pickle_grading_code_by_value(cloudpickle) -> None:
    """Classes and functions of the grading package travel as code (the student's kernel
    cannot import the package)."""
    for name, module in list(sys.modules.items()):
        if (name == "attn_grader" or name.startswith("attn_grader.")) and module is not None:
            with contextlib.suppress(ValueError):
                cloudpickle.register_pickle_by_value(module)


_channels: list[Channel] = []


@contextlib.contextmanager
def using(channel: Channel):
    """Make ``channel`` the one :func:`lend` sends to while a check runs."""
    _channels.append(channel)
    try:
        yield channel
    finally:
        _channels.pop()


def lend(obj):
    """The student's own copy of a trusted object (see :func:`attn_grader.framework.lend`)."""
    if _channels:
        return _channels[-1].lend(obj)
    return copy.deepcopy(obj)
