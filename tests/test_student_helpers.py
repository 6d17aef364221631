"""The student-side training loops (attn_utils): graded demos run them with zero steps."""

import subprocess
import sys
import textwrap

import torch

from attn_utils.seq2seq import copy_task, fit
from attn_utils.training import train


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _copy_loss(model, src, src_lengths, tgt):
    # a stand-in model: predict every target token from the mean source embedding
    h = model[0](src).mean(1, keepdim=True)
    logits = model[1](h).expand(-1, tgt.shape[1], -1)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten())


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(16, 8), torch.nn.Linear(8, 16))


def test_fit_with_zero_epochs_trains_nothing_and_leaves_eval_mode():
    model, data = _model(), copy_task(32, min_len=1, max_len=4, seed=0)
    before = _params(model)
    history = fit(model, data, _copy_loss, epochs=0)
    assert history == {"loss": [], "on_epoch": []}
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_fit_trains_and_records_one_loss_and_callback_per_epoch():
    model, data = _model(), copy_task(64, min_len=1, max_len=4, seed=0)
    before = _params(model)
    history = fit(model, data, _copy_loss, epochs=2, batch_size=16, on_epoch=lambda e: e * 10)
    assert len(history["loss"]) == 2 and history["on_epoch"] == [0, 10]
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_train_with_zero_steps_returns_no_losses():
    model = torch.nn.Linear(2, 1)
    before = _params(model)
    assert train(model, [], lambda m, b: m(b).sum(), steps=0) == []
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_zero_step_training_never_imports_the_compiler():
    # the reason for the zero-step path: the first torch.optim optimizer imports torch._dynamo
    # (about 1.3 s), which graded demos must not pay; checked in a fresh interpreter
    code = textwrap.dedent("""
        import sys, torch
        from attn_utils.seq2seq import copy_task, fit
        from attn_utils.training import train
        model = torch.nn.Linear(2, 1)
        train(model, [], lambda m, b: m(b).sum(), steps=0)
        fit(model, copy_task(8, 1, 3), lambda *a: None, epochs=0)
        print("torch._dynamo" in sys.modules)
        torch.optim.Adam(model.parameters())
        print("torch._dynamo" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
