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


def test_train_stops_when_asked_and_reports_the_steps_taken():
    model = torch.nn.Linear(2, 1)
    data = [torch.ones(4, 2)] * 20
    losses = train(model, iter(data), lambda m, b: m(b).pow(2).mean(), steps=20,
                   stop=lambda seen: len(seen) == 3)
    assert len(losses) == 3 and not model.training


def test_lstm_forget_gates_match_a_cell_run_by_hand():
    from attn_utils.recall import lstm_forget_gates

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, batch_first=True)
    x = torch.randn(2, 6, 3)
    f = lstm_forget_gates(lstm, x)
    assert f.shape == (2, 6, 5) and not f.requires_grad
    w_ih, w_hh = lstm.weight_ih_l0.detach(), lstm.weight_hh_l0.detach()
    b = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()
    h = c = torch.zeros(2, 5)
    for t in range(6):  # gates in PyTorch's order: input, forget, cell, output
        i, g_f, g, o = (x[:, t] @ w_ih.T + h @ w_hh.T + b).chunk(4, dim=1)
        assert torch.allclose(f[:, t], torch.sigmoid(g_f), atol=1e-6)
        c = torch.sigmoid(g_f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)


def test_allocated_bytes_counts_what_the_allocator_hands_out():
    from attn_utils.selfattn import allocated_bytes

    a = torch.randn(64, 64)
    assert allocated_bytes(lambda: torch.empty(1000)) == 4000
    assert allocated_bytes(lambda: a @ a) == 64 * 64 * 4
    # a temporary freed before the end still counts
    assert allocated_bytes(lambda: (a + 1).sum()) >= 64 * 64 * 4


def test_repeated_pattern_batch_repeats_its_first_period():
    from attn_utils.selfattn import repeated_pattern_batch

    generator = torch.Generator().manual_seed(0)
    tokens = repeated_pattern_batch(5, 11, 4, n_symbols=6, generator=generator)
    assert tokens.shape == (5, 11) and tokens.dtype == torch.int64
    assert torch.equal(tokens[:, 4:], tokens[:, :7])
    assert tokens.min() >= 3 and tokens.max() < 9
