"""attn_grader.remote and attn_grader.agent: what a check sees of the student's objects
through a channel is what it would see in one process — results by value, gradients,
inputs changed in place, exceptions, seeding, identity — and nothing crosses but data."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from attn_grader import agent as wire
from attn_grader import remote


def _proxy(obj, name="f"):
    channel = remote.LoopbackChannel({name: obj})
    return channel, channel.lookup(name)


def test_results_come_back_by_value_as_plain_tensors():
    class Sneaky(torch.Tensor):
        def __eq__(self, other):
            return True

    _, f = _proxy(lambda x: (x * 2).as_subclass(Sneaky))
    out = f(torch.ones(3))
    assert type(out) is torch.Tensor and out.tolist() == [2.0, 2.0, 2.0]


def test_structures_numbers_and_other_objects():
    _, f = _proxy(lambda: (1, 2.5, [torch.zeros(2)], {"a": None}, float("nan"), "s",
                           nn.Linear(2, 3)))
    one, half, tensors, mapping, nan, text, module = f()
    assert (one, half, mapping, text) == (1, 2.5, {"a": None}, "s")
    assert nan != nan and type(tensors[0]) is torch.Tensor
    assert isinstance(module, remote.RemoteObject) and module.out_features == 3


def test_gradients_flow_through_a_remote_call_to_inputs_and_parameters():
    layer = nn.Linear(3, 2)
    twin = copy.deepcopy(layer)
    channel, student = _proxy(layer, "layer")
    x = torch.randn(4, 3, requires_grad=True)
    out = student(x)
    assert out.requires_grad
    (out * torch.arange(8.0).view(4, 2)).sum().backward()
    x_local = x.detach().clone().requires_grad_(True)
    (twin(x_local) * torch.arange(8.0).view(4, 2)).sum().backward()
    assert torch.allclose(x.grad, x_local.grad)
    grads = dict(student.named_parameters())
    assert torch.allclose(grads["weight"].grad, twin.weight.grad)


def test_a_detached_output_is_cut_off_from_autograd():
    _, f = _proxy(lambda x: (x * 2).detach())
    assert not f(torch.ones(2, requires_grad=True)).requires_grad


def test_inputs_changed_in_place_are_changed_for_the_check_too():
    def sloppy(x, h):
        x.mul_(0)
        h.requires_grad_(True)
        return x

    _, f = _proxy(sloppy)
    x, h = torch.ones(3), torch.ones(2)
    f(x, h)
    assert x.tolist() == [0.0, 0.0, 0.0] and h.requires_grad


def test_exceptions_keep_their_kind_and_message():
    def stub(*a):
        raise NotImplementedError()

    def custom(*a):
        class Oops(Exception):
            pass

        raise Oops("mine")

    _, f = _proxy(stub)
    with pytest.raises(NotImplementedError):
        f()
    _, g = _proxy(custom)
    with pytest.raises(remote.StudentError) as info:
        g()
    assert type(info.value).__name__ == "Oops" and "mine" in str(info.value)


def test_seeded_builds_are_the_same_and_random_calls_differ():
    channel, make = _proxy(lambda: nn.Linear(4, 4))
    torch.manual_seed(3)
    a = make().weight
    torch.manual_seed(3)
    b = make().weight
    assert torch.equal(a, b)
    _, drop = _proxy(nn.Dropout(0.5))
    x = torch.ones(64)
    assert not torch.equal(drop(x), drop(x))


def test_the_same_object_is_the_same_proxy():
    layers = nn.ModuleList([nn.Linear(2, 2)] * 2)
    _, student = _proxy(layers, "layers")
    assert student[0] is student[1]
    assert len(list(student)) == 2


def test_lent_objects_are_the_students_own_copies():
    channel, f = _proxy(lambda m: m.train(False))
    module = nn.Linear(2, 2)
    with remote.using(channel):
        lent = remote.lend(module)
    f(lent)
    assert lent.training is False and module.training is True


def test_trusted_objects_are_never_sent_by_reference():
    _, f = _proxy(lambda m: m)
    with pytest.raises(wire.WireError, match="lend"):
        f(nn.Linear(2, 2))


def test_the_grading_side_never_unpickles():
    # a reply is JSON plus safetensors; a pickle in the tensor data is just bytes
    agent = wire.Agent(lambda: {"f": lambda: b"\x80\x04K\x01."})
    reply, blob = agent.handle({"op": "call", "target": {"ref": 0}}, b"")
    assert reply["ok"] is False  # no such handle: nothing was run
    reply, blob = agent.handle({"op": "lookup", "name": "f"}, b"")
    value = remote.LoopbackChannel({"f": lambda: b"\x80\x04K\x01."}).lookup("f")()
    assert value == b"\x80\x04K\x01."


def test_malformed_replies_are_refused():
    with pytest.raises(wire.WireError):
        wire.Decoder({})({"T": "t9"})
    with pytest.raises(wire.WireError):
        wire.load_tensors(b"not safetensors at all")
    deep = {"list": []}
    node = deep
    for _ in range(wire.MAX_DEPTH + 2):
        node["list"].append({"list": []})
        node = node["list"][0]
    with pytest.raises(wire.WireError, match="deeply"):
        wire.Decoder({})(deep)
