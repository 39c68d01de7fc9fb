"""`outputs=` of Property.loss/value: a network output the caller already has (a training
step's cross-entropy computes model(x)) stands for f(x0) in the loss and in the search, so the
network runs two times fewer per step. Exact where used: the same points and loss values bit
for bit and the same weight gradients up to float rounding (the two uses of f(x0) are summed
before one backward pass instead of after two); ignored for networks not known to be the
same in train and eval mode (dropout, batch norm, hooks), which then run as before."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from robustspec.compiler import PGD, compile_spec
from robustspec.compiler.quantifiers import mode_independent
from robustspec.dsl.errors import InputError
from robustspec.runtime.models import Clamp, PaperMLP, SmallCNN

SPECS = {"sr": "specs/standard_robustness.spec", "lr": "specs/lipschitz_robustness.spec",
         "scr": "specs/strong_classification_robustness.spec"}
# SR and LR violated at some examples of the small net below, so their losses have gradients
PARAMS = {"sr": {"delta": 0.05}, "lr": {"L": 0.5}, "scr": {}}


class Addmm(TorchDispatchMode):
    """Counts addmm calls (one per linear layer per forward pass)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += func.overloadpacket.__name__ == "addmm"
        return func(*args, **(kwargs or {}))


def run(m, prop, x, y, share: bool, params=None, seed: int = 3):
    """The trainer's constraint step on m: the per-example loss, the weight gradients, the
    addmm count (and the RNG draws stay the caller's: seeded here)."""
    m.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout's masks
    with Addmm() as count:
        logits = m(x)
        loss_c = prop.loss(m, x0=x, y=y, generator=gen, params=params or None, reduction="none",
                           search=PGD(steps=4, step_size=0.05, early_stop=False),
                           **({"outputs": {"x0": logits}} if share else {}))
        (F.cross_entropy(logits, y) + 0.2 * loss_c.mean()).backward()
    return loss_c.detach(), [p.grad.clone() for p in m.parameters()], count.n


def bits(t):
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int64)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_shared_outputs_give_the_same_loss_and_gradients(name):
    prop = compile_spec(SPECS[name])[name]
    torch.manual_seed(0)
    m = PaperMLP(20, hidden=16, classes=5)
    x, y = torch.rand(9, 20), torch.randint(0, 5, (9,))
    loss_o, grads_o, n_o = run(m, prop, x, y, False, PARAMS[name])
    loss_n, grads_n, n_n = run(m, prop, x, y, True, PARAMS[name])
    assert torch.equal(bits(loss_o), bits(loss_n))  # the same points, the same loss, bit for bit
    if name != "scr":
        assert bool((loss_o > 0).any())  # something to differentiate
    for a, b in zip(grads_o, grads_n):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    # two forward passes fewer (the search's f(x0) and the loss's), two linear layers each;
    # SCR has no f(x0)
    assert n_o - n_n == (0 if name == "scr" else 4)


def test_value_takes_outputs_too_and_a_no_grad_call_works():
    prop = compile_spec(SPECS["sr"])["sr"]
    torch.manual_seed(1)
    m = PaperMLP(12, hidden=8, classes=4)
    x, y = torch.rand(5, 12), torch.randint(0, 4, (5,))
    search = PGD(steps=3, step_size=0.05, early_stop=False)
    with torch.no_grad():
        logits = m(x)
        want = prop.value(m, x0=x, y=y, search=search, generator=torch.Generator().manual_seed(0))
        got = prop.value(m, x0=x, y=y, search=search, generator=torch.Generator().manual_seed(0),
                         outputs={"f(x0)": logits})
    assert torch.equal(bits(want), bits(got))


class Dropper(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 4))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("make", [
    lambda: Dropper(),
    lambda: nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4)),
])
def test_a_network_whose_modes_differ_runs_as_without_outputs(make):
    """Dropout (random, and off in eval mode) and batch norm (batch statistics and running
    averages in train mode): the outputs handed in are not used, so everything is as before,
    bit for bit, the running averages included."""
    prop = compile_spec(SPECS["sr"])["sr"]
    torch.manual_seed(2)
    a = make().train()
    b = copy.deepcopy(a)
    x, y = torch.rand(7, 12), torch.randint(0, 4, (7,))
    loss_a, grads_a, n_a = run(a, prop, x, y, False, {"delta": 0.05})
    loss_b, grads_b, n_b = run(b, prop, x, y, True, {"delta": 0.05})
    assert n_a == n_b
    assert torch.equal(bits(loss_a), bits(loss_b))
    assert all(torch.equal(bits(g), bits(h)) for g, h in zip(grads_a, grads_b))
    for (k, s), (_, t) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(s, t), k


def test_which_networks_are_known_mode_independent():
    assert mode_independent(PaperMLP(4)) and mode_independent(SmallCNN(1, 8))
    assert mode_independent(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), Clamp()))
    assert not mode_independent(nn.Sequential(nn.Linear(3, 3), nn.Dropout()))
    assert not mode_independent(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    assert not mode_independent(Dropper())  # its own class says nothing

    class Sub(PaperMLP):  # may override forward: the marker is not inherited
        pass
    assert not mode_independent(Sub(4))
    hooked = PaperMLP(4)
    handle = hooked.register_forward_hook(lambda *a: None)
    assert not mode_independent(hooked)
    handle.remove()
    assert mode_independent(hooked)
    patched = PaperMLP(4)
    patched.forward = lambda x: x
    assert not mode_independent(patched)
    assert not mode_independent(lambda x: x)  # a function: nothing known


def test_outputs_are_checked():
    prop = compile_spec(SPECS["sr"])["sr"]
    m = PaperMLP(6, hidden=4, classes=3)
    x, y = torch.rand(4, 6), torch.randint(0, 3, (4,))
    good = m(x)
    cases = [({"x": good}, "not a tensor argument"), ({"g(x0)": good}, "does not declare"),
             ({"x0": good[:2]}, "batch first"), ({"x0": 3.0}, "float tensor"),
             ({"y": good}, "not a tensor argument"), ([good], "takes a dict")]
    for outputs, words in cases:
        with pytest.raises(InputError, match=words):
            prop.loss(m, x0=x, y=y, search=PGD(steps=1), outputs=outputs)


def test_outputs_of_a_converted_argument_are_not_used():
    """x0 given as a list is bound as a new tensor: outputs handed in are not known to be the
    network's on that tensor, so the network runs instead."""
    prop = compile_spec(SPECS["sr"])["sr"]
    m = PaperMLP(6, hidden=4, classes=3)
    x, y = torch.rand(4, 6), torch.randint(0, 3, (4,))
    with Addmm() as count:
        prop.value(m, x0=x.tolist(), y=y, search=PGD(steps=0), outputs={"x0": torch.zeros(4, 3)})
    assert count.n > 0 and count.n % 2 == 0
    # a wrong output would have made f(x0) = 0; the value is the one computed from the network
    want = prop.value(m, x0=x, y=y, search=PGD(steps=0))
    got = prop.value(m, x0=x.tolist(), y=y, search=PGD(steps=0), outputs={"x0": torch.zeros(4, 3)})
    assert torch.equal(want, got)


def test_the_trainer_hands_its_logits_over_and_trains_the_same_weights():
    """Constraint training of the paper's MLP (outputs shared) against the same run on a copy
    with a no-op forward hook (not known mode-independent: outputs not used): the same
    weights up to float rounding, and two forward passes fewer per batch."""
    from robustspec.runtime.training import TrainConfig, Trainer

    prop = compile_spec(SPECS["sr"])["sr"]
    torch.manual_seed(4)
    x, y = torch.rand(40, 1, 4, 4), torch.randint(0, 10, (40,))
    cfg = TrainConfig(regime="constraint", epochs=2, batch_size=16, search_steps=3,
                      step_size=0.05, lr=1e-3, params={"delta": 0.05})
    torch.manual_seed(5)
    a = PaperMLP(16, hidden=8)
    b = copy.deepcopy(a)
    b.register_forward_hook(lambda *args: None)
    runs = {}
    for name, model in (("shared", a), ("not shared", b)):
        with Addmm() as count:
            Trainer(model, cfg, prop, progress=False).fit(x, y)
        runs[name] = count.n
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)
    batches = 2 * 3  # 2 epochs of 40 examples in batches of 16
    assert runs["not shared"] - runs["shared"] == batches * 2 * 2


def test_per_class_sr_with_outputs_is_the_same():
    """`forall j in classes` sized from the network's outputs: the same loss with f(x0)
    handed in (the quantifier over classes indexes the handed-in output too)."""
    spec = compile_spec("""
network f : Tensor -> Tensor
param eps   : Real = 0.1
param delta : Real = 0.05
valid(x) = 0 <= x <= 1
property pc(x0 : Tensor, y : Label) =
  forall x . norm_inf(x - x0) <= eps and valid(x) =>
    forall j in classes . abs(f(x)[j] - f(x0)[j]) <= delta
""", filename="<per-class>")
    torch.manual_seed(6)
    m = PaperMLP(20, hidden=16, classes=5)
    x, y = torch.rand(9, 20), torch.randint(0, 5, (9,))
    run(m, spec["pc"], x, y, False)  # the first call learns the output size (one pass)
    loss_o, grads_o, n_o = run(m, spec["pc"], x, y, False)
    loss_n, grads_n, n_n = run(m, spec["pc"], x, y, True)
    assert torch.equal(bits(loss_o), bits(loss_n)) and bool((loss_o > 0).any())
    for a, b in zip(grads_o, grads_n):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert n_o - n_n == 4
