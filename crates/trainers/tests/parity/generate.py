#!/usr/bin/env python3
"""Writes the parity fixtures that crates/trainers/tests/parity.rs checks tailguard's methods against.

Each method's loss and training step is re-expressed here in PyTorch from its official code, as
../shared/reference/{taet,robustlt}.md describe it (files and lines are named beside each function), including the
quirks the official code has: where an attack starts and whether that start is clipped, how BatchNorm normalises
while the attack runs, forward passes whose only effect is on BatchNorm's running statistics, RobustLT's logging
passes. Everything is computed in float64 from float32 inputs, so the fixtures are the official computation without
rounding noise; tailguard runs in float32 and must agree within 1e-4 (relative).

    python3 crates/trainers/tests/parity/generate.py        # needs torch and safetensors (pip install both)

It writes fixtures/losses.safetensors (part a: loss values and their gradients with respect to logits and
features, batches with absent classes) and fixtures/<case>.safetensors plus fixtures/cases.json (parts b and c: two
complete training steps of a small CNN from identical weights, batches and attack starts, with the state a method
carries between them).
"""

import copy
import json
import math
import pathlib
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

torch.set_default_dtype(torch.float64)
# REAT's KLDivLoss(size_average='none') is a plain mean; PyTorch warns about exactly that reduction.
warnings.filterwarnings("ignore", message="reduction: 'mean' divides")
OUT = pathlib.Path(__file__).resolve().parent / "fixtures"

CLASSES = 10
BATCH = 16
WIDTH = 4
SIZE = 8
# Training counts of the long-tailed set the methods' priors, margins and budgets come from.
COUNTS = [50, 30, 20, 12, 8, 5, 3, 2, 2, 1]
EPS = 8 / 255


def f32(t):
    """Rounds to float32 and back: the fixture stores float32 inputs, and both sides compute from exactly those."""
    return t.float().double()


# --------------------------------------------------------------------------------------------------------------------
# The network: tailguard's small CNN (crates/models/src/small_cnn.rs) under its export names.


class CosineHead(nn.Module):
    """RoBal's CosPlus classifier with scale 1, gamma 1/32 and no bias (wutong16/Adversarial_Long-Tail,
    models/classifiers/basic_classifiers.py; RobustLT core/models/basic_classifiers.py)."""

    def __init__(self, features, classes):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, features))
        self.gamma = 1 / 32

    def forward(self, f):
        unit = f / f.norm(dim=1, keepdim=True)
        w = self.weight / (self.weight.norm(dim=1, keepdim=True) + self.gamma)
        return unit @ w.t()


class SmallCnn(nn.Module):
    def __init__(self, cosine=False):
        super().__init__()
        w = WIDTH
        shapes = [(3, w, 1), (w, 2 * w, 2), (2 * w, 4 * w, 2)]
        self.convs = nn.ModuleList([nn.Conv2d(i, o, 3, s, 1, bias=False) for i, o, s in shapes])
        self.norms = nn.ModuleList([nn.BatchNorm2d(o) for _, o, _ in shapes])
        self.head = CosineHead(4 * w, CLASSES) if cosine else nn.Linear(4 * w, CLASSES)

    def forward(self, x, features=False):
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        f = x.mean(dim=(2, 3))
        z = self.head(f)
        return (f, z) if features else z


def initial_model(cosine, seed):
    """A network with float32-representable random weights and non-trivial BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    model = SmallCnn(cosine)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            shape = t.shape
            if name.endswith("running_var"):
                v = 0.5 + torch.rand(shape, generator=g)
            elif name.endswith("running_mean"):
                v = 0.1 * torch.randn(shape, generator=g)
            elif name.startswith("norms") and name.endswith("weight"):
                v = 1 + 0.1 * torch.randn(shape, generator=g)
            elif name.startswith("norms") and name.endswith("bias"):
                v = 0.1 * torch.randn(shape, generator=g)
            elif name.startswith("convs"):
                fan_in = shape[1] * shape[2] * shape[3]
                v = torch.randn(shape, generator=g) * math.sqrt(2 / fan_in)
            else:  # head
                v = torch.randn(shape, generator=g) / math.sqrt(4 * WIDTH) if len(shape) == 2 else 0.1 * torch.randn(
                    shape, generator=g)
            t.copy_(f32(v))
    return model


def weights(model, prefix):
    return {f"{prefix}.{k}": v.detach().clone() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


# --------------------------------------------------------------------------------------------------------------------
# Losses, as the official code computes them.


def balanced_softmax(logits, y, counts, tau=1.0):
    """AT-BSL at_bsl_loss.py BSL / REAT loss_functions.py BSL / RobustLT core/methods/atbsl.py BSL: CE(z + tau log n)."""
    n = torch.tensor(counts, dtype=logits.dtype)
    return F.cross_entropy(logits + tau * n.log(), y)


def trades_kl_sum(adv_logits, clean_logits):
    """TRADES trades.py: KLDivLoss(size_average=False)(log_softmax(adv), softmax(clean)), a sum over the batch."""
    return F.kl_div(F.log_softmax(adv_logits, dim=1), F.softmax(clean_logits, dim=1), reduction="sum")


def robal_margin_loss(cos_logits, y, counts, s=10.0, m=0.1, tau_b=1.5, tau_m=0.3):
    """RoBal methods/losses_inclass.py MultiMarginLoss: s (z - m_y 1[j = y]) + tau_b log prior, then CE."""
    n = torch.tensor(counts, dtype=cos_logits.dtype)
    margins = tau_m * torch.log(n / n.min()) / s + m
    one_hot = F.one_hot(y, CLASSES).bool()
    shifted = torch.where(one_hot, cos_logits - margins[y].view(-1, 1), cos_logits)
    return F.cross_entropy(shifted * s + tau_b * torch.log(n / n.sum()), y)


def robal_kl(clean_logits, adv_logits):
    """RoBal methods/train_modes.py add_reg_train, reg_opt 'trades': (1/B) KLDivLoss(sum)(log(q + 1e-12), p)."""
    p = F.softmax(clean_logits, dim=1)
    q = F.softmax(adv_logits, dim=1)
    return F.kl_div(torch.log(q + 1e-12), p, reduction="sum") / clean_logits.shape[0]


def reat_class_weights(counts, predicted):
    """REAT loss_functions.py RBL: effective numbers of last epoch's adversarial predictions (float32 numpy there)."""
    w = []
    for n, m in zip(counts, predicted):
        beta = (n - 1.0) / n
        e = (1.0 - beta ** m) / (1.0 - beta) if beta != 1.0 else m
        w.append(1.0 / (e + 1e-5))
    total = sum(w)
    return torch.tensor([x / total * len(counts) for x in w])


def reat_tail(features, y, counts):
    """REAT loss_functions.py REAT: the tail feature term. KLDivLoss(size_average='none') means a scalar mean."""
    n = torch.tensor(counts, dtype=features.dtype)
    omega = torch.sqrt(1.0 / (n / n.sum()))
    tail = list(range(CLASSES // 3 * 2 + 1, CLASSES))
    total, counter = None, 0.0
    for i in range(y.shape[0]):
        if y[i].item() in tail:
            same = torch.tensor([-1.0 if y[i] == y[j] else 1.0 for j in range(y.shape[0])])
            pair = torch.stack([omega[y[i]] + omega[y[j]] for j in range(y.shape[0])])
            target = F.softmax(features[i].detach().view(1, -1).expand(y.shape[0], -1), dim=1)
            kl = F.kl_div(F.log_softmax(features, dim=1), target, reduction="mean")
            term = kl * same * pair
            total = term if total is None else total + term
            counter += 1
    return total.mean() / counter if counter > 0 else torch.zeros(())


def harl(per_sample, y, weights=(0.1, 0.1, 0.1)):
    """TAET code/HARL.py (and RobustLT core/methods/taet.py): per-class mean losses over all C classes."""
    losses = torch.stack([(per_sample * (y == c)).sum() / ((y == c).sum() + 1e-10) for c in range(CLASSES)])
    mean = losses.mean()
    return (weights[0] * mean + weights[1] * ((losses - mean) ** 2).mean()
            + weights[2] * ((losses / (losses.sum() + 1e-10)) ** 2).sum())


# --------------------------------------------------------------------------------------------------------------------
# The attack loop every official implementation writes out.


def set_attack_mode(model, batch_norm):
    if batch_norm == "running":
        model.eval()  # TRADES, AT-BSL, RoBal, REAT, TAET
    else:
        # RobustLT core/methods/utils.py get_adversarial_examples: train() with track_running_stats off.
        model.train()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.track_running_stats = False


def restore_train_mode(model):
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats = True


def pgd(model, x, start, eps, step, steps, loss_fn, batch_norm, clip):
    """`eps` and `step` are (N, 1, 1, 1); `clip` is what happens to the start before the first gradient."""
    set_attack_mode(model, batch_norm)
    xa = start.clone()
    if clip == "box":
        xa = xa.clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(xa)
        grad, = torch.autograd.grad(loss, [xa])
        xa = xa.detach() + step * grad.sign()
        xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
    restore_train_mode(model)
    return xa.detach()


# --------------------------------------------------------------------------------------------------------------------
# One training step per method: the official code's order of forward passes, loss, backward, SGD.


class Case:
    def __init__(self, name, sets, cosine=False, attack=None, robustlt=None, epochs=4, awp_warmup=None):
        self.awp_warmup = awp_warmup  # AWP cases: epochs (1-based comparison, as the port) without perturbation
        self.name = name
        self.sets = sets
        self.cosine = cosine
        self.attack = attack  # dict(eps, step, steps, start, clip, batch_norm)
        self.robustlt = robustlt  # (alpha, beta) or None
        self.epochs = epochs


def budgets(case, epoch):
    """Per-class budgets and steps in 0-based `epoch` (RobustLT core/methods/robustlt.py for RobustLT cases)."""
    a = case.attack
    if case.robustlt is None:
        return torch.full((CLASSES,), a["eps"]), torch.full((CLASSES,), a["step"])
    alpha, beta = case.robustlt
    n = torch.tensor(COUNTS, dtype=torch.float64)
    rarity = (n.max() / n).log().sqrt()
    tau = alpha / ((n / n.sum()) * rarity).sum()
    full = (1 - alpha) * a["eps"] + tau * rarity * a["eps"]
    current_epoch = epoch + 1  # the port counts epochs from 1
    intensity = min((current_epoch - 1) / (beta * case.epochs), 1) if beta > 0 else 1.0
    eps = full * intensity
    return eps, eps / a["eps"] * a["step"]


def draw_start(case, x, g):
    a = case.attack
    if a["start"] == "gaussian":
        return f32(x + 0.001 * torch.randn(x.shape, generator=g))
    if a["start"] == "uniform":
        return f32(x + (2 * torch.rand(x.shape, generator=g) - 1) * a["eps"])
    if a["start"] == "uniform-positive":
        return f32(x + a["eps"] * torch.rand(x.shape, generator=g))
    raise ValueError(a["start"])


def ce_attack(model, y):
    return lambda xa: F.cross_entropy(model(xa), y)


def official_step(case, model, x, y, start, epoch, state):
    """One step as the official code of `case.name` runs it: returns (loss, adversarial images or None). The
    optimizer step and RobustLT's logging passes happen in the caller."""
    method = case.name.removeprefix("robustlt-")
    port = case.name.startswith("robustlt-")
    eps_c, step_c = budgets(case, epoch) if case.attack else (None, None)
    a = case.attack
    eps = eps_c[y].view(-1, 1, 1, 1) if a else None
    step = step_c[y].view(-1, 1, 1, 1) if a else None

    def attack(loss_fn):
        return pgd(model, x, start, eps, step, a["steps"], loss_fn, a["batch_norm"], a["clip"])

    if method == "natural":
        return F.cross_entropy(model(x), y), None
    if method in ("pgd-at", "awp"):  # RobustLT core/methods/pgdat.py + utils.py (AWP: awp.py, same loss)
        xa = attack(ce_attack(model, y))
        return F.cross_entropy(model(xa), y), xa
    if method == "trades":  # TRADES trades.py trades_loss
        xa = attack(lambda v: trades_kl_sum(model(v), model(x)))
        logits = model(x)
        natural = F.cross_entropy(logits, y)
        robust = trades_kl_sum(model(xa), model(x)) / x.shape[0]
        return natural + 6.0 * robust, xa
    if method == "at-bsl":
        xa = attack(ce_attack(model, y))
        loss = balanced_softmax(model(xa), y, COUNTS)
        if port:  # RobustLT core/methods/atbsl.py: an unused clean forward after the adversarial one
            model(x)
        return loss, xa
    if method == "robal":
        xa = attack(ce_attack(model, y))
        adv = model(xa)
        margin = robal_margin_loss(adv, y, COUNTS)
        if not port:  # train_modes.py add_reg_train: beta_nat * CE(model(x_natural)) is computed with beta_nat = 0
            model(x)
        clean = model(x)
        # The original (add_reg_train) runs x_adv through the model again for the KL; RobustLT's port reuses it.
        adv_kl = adv if port else model(xa)
        return margin + 6.0 * robal_kl(clean, adv_kl), xa
    if method == "reat":  # REAT loss_functions.py REAT (RobustLT core/methods/reat.py)
        w = reat_class_weights(COUNTS, state["predicted"])
        xa = attack(lambda v: F.cross_entropy(model(v), y, weight=w))
        f, logits = model(xa, features=True)
        loss = balanced_softmax(logits, y, COUNTS) + reat_tail(f, y, COUNTS)
        if not port:  # counts of the pre-update adversarial predictions (train.py)
            state["tally"] += torch.bincount(logits.argmax(1), minlength=CLASSES)
        return loss, xa
    if method == "taet":
        ce_epochs = state["ce_epochs"]
        if not port:  # TAET.ipynb train_model: an unused clean forward first, in both stages
            model(x)
            if epoch < ce_epochs:
                return F.cross_entropy(model(x), y), None
            xa = attack(ce_attack(model, y))
            return harl(F.cross_entropy(model(xa), y, reduction="none"), y), xa
        if epoch + 1 < ce_epochs:  # RobustLT core/methods/taet.py compares its 1-based epoch
            return F.cross_entropy(model(x), y), None
        xa = attack(ce_attack(model, y))
        adv = model(xa)
        model(x)  # unused
        return harl(F.cross_entropy(adv, y, reduction="none"), y), xa
    raise ValueError(case.name)


AWP_GAMMA = 0.005


def diff_in_weights(model, proxy):
    """RobustLT core/methods/awp.py: each weight tensor's change, rescaled to the tensor's norm."""
    diff = {}
    for (old_k, old_w), (_, new_w) in zip(model.state_dict().items(), proxy.state_dict().items()):
        if len(old_w.size()) <= 1:
            continue
        if "weight" in old_k:
            diff_w = new_w - old_w
            diff[old_k] = old_w.norm() / (diff_w.norm() + 1e-20) * diff_w
    return diff


def add_into_weights(model, diff, coeff):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in diff:
                param.add_(coeff * diff[name])


def awp_update(case, model, optimizer, loss, recompute, epoch):
    """RobustLT core/methods/awp.py AdvWeightPerturb.update (grad_clip None): returns the loss it stepped on."""
    active = epoch + 1 > case.awp_warmup  # the port's 1-based current_epoch > awp_warmup
    if active:
        origin_model = copy.deepcopy(model)
        origin_opt = copy.deepcopy(optimizer.state_dict())
        optimizer.zero_grad()
        (-loss.mean()).backward()
        optimizer.step()
        diff = diff_in_weights(origin_model, model)
        model.load_state_dict(origin_model.state_dict())
        optimizer.load_state_dict(origin_opt)
        add_into_weights(model, diff, 1.0 * AWP_GAMMA)
        loss = recompute()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if active:
        add_into_weights(model, diff, -1.0 * AWP_GAMMA)
    return loss


def logging_passes(case, model, x, y, xa, state):
    """RobustLT core/methods/utils.py update (and its TAET / REAT overrides): train-mode passes without gradients."""
    with torch.no_grad():
        if case.name == "robustlt-taet":
            model(x)
            adv = model(xa if xa is not None else x)
        else:
            adv = model(xa)
            model(x)
        if case.name == "robustlt-reat":
            state["tally"] += torch.bincount(adv.argmax(1), minlength=CLASSES)


# --------------------------------------------------------------------------------------------------------------------


BASE_ATTACKS = {
    # RobustLT's template (parser defaults): eps 8/255, step 2/255, 10 steps, uniform start clipped to [0, 1],
    # BatchNorm on batch statistics.
    "port": dict(eps=EPS, step=2 / 255, steps=10, start="uniform", clip="box", batch_norm="batch"),
    "trades": dict(eps=0.031, step=0.007, steps=10, start="gaussian", clip="none", batch_norm="running"),
    "at-bsl": dict(eps=EPS, step=2 / 255, steps=10, start="gaussian", clip="none", batch_norm="running"),
    "robal": dict(eps=0.031, step=0.0078, steps=5, start="uniform-positive", clip="none", batch_norm="running"),
    "reat": dict(eps=EPS, step=2 / 255, steps=10, start="uniform", clip="none", batch_norm="running"),
    "taet": dict(eps=0.031, step=0.003, steps=10, start="gaussian", clip="none", batch_norm="running"),
}


def attack_sets(a):
    """The config lines that give tailguard the attack (clip and BatchNorm mode are left to the method's default,
    which must be the official one)."""
    return [f"attack.eps={a['eps']!r}", f"attack.step_size={a['step']!r}", f"attack.steps={a['steps']}",
            f"attack.start={a['start']}"]


def cases():
    out = [Case("natural", ["method.name=natural"])]
    for name, attack in [("pgd-at", "port"), ("trades", "trades"), ("at-bsl", "at-bsl"), ("robal", "robal"),
                         ("reat", "reat"), ("taet", "taet")]:
        a = BASE_ATTACKS[attack]
        sets = [f"method.name={name}"] + attack_sets(a)
        if name == "robal":
            sets += ["model.head=cosine"]
        if name == "taet":
            sets += ["method.ce_epochs=2"]  # the first step (epoch 1) is clean, the second (epoch 2) adversarial
        out.append(Case(name, sets, cosine=name == "robal", attack=a))
    for base in ["pgd-at", "at-bsl", "robal", "reat", "taet"]:
        a = dict(BASE_ATTACKS["port"])
        if base == "robal":
            a.update(steps=5)  # RoBal's configs: attack_iter 5
        sets = [f"method.name={base}", "robustlt.alpha=0.3", "robustlt.beta=0.8"] + attack_sets(a)
        if base == "robal":
            sets += ["model.head=cosine"]
        if base == "taet":
            # The port's ce_epochs 3 compared with its 1-based epoch is tailguard's ce_epochs 2 (see taet.rs).
            sets += ["method.ce_epochs=2"]
        out.append(Case(f"robustlt-{base}", sets, cosine=base == "robal", attack=a, robustlt=(0.3, 0.8)))
    # AWP (last, so the earlier cases keep their seeds). Warm-up 2 perturbs the second step only (1-based epochs 2
    # and 3), so its ascent step meets momentum buffers from a plain step; under RobustLT both steps perturb.
    a = BASE_ATTACKS["port"]
    out.append(Case("awp", ["method.name=awp", "method.warmup=2"] + attack_sets(a), attack=a, awp_warmup=2))
    out.append(Case("robustlt-awp", ["method.name=awp", "robustlt.alpha=0.3", "robustlt.beta=0.8"] + attack_sets(a),
                    attack=a, robustlt=(0.3, 0.8), awp_warmup=0))
    return out


# Epochs (0-based) of the two steps: the second step starts a new epoch, so state carried between epochs (REAT's
# counts, RobustLT's intensity, TAET's stage) changes between them.
STEP_EPOCHS = [1, 2]
LR = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


def batch(g):
    x = f32(torch.rand(BATCH, 3, SIZE, SIZE, generator=g))
    # Labels over classes 0-6 and 9: classes 7 and 8 are absent, class 9 is a REAT tail class.
    pool = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 9])
    y = pool[torch.randint(0, len(pool), (BATCH,), generator=g)]
    return x, y


def run_case(case, seed):
    g = torch.Generator().manual_seed(seed)
    model = initial_model(case.cosine, seed)
    tensors = weights(model, "init")
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    state = {"predicted": [float(n) for n in COUNTS], "tally": torch.zeros(CLASSES, dtype=torch.long),
             "ce_epochs": 3 if case.name == "robustlt-taet" else 2}
    model.train()
    losses = []
    for k, epoch in enumerate(STEP_EPOCHS):
        if k > 0 and epoch != STEP_EPOCHS[k - 1]:  # the end of an epoch: REAT's counts roll over
            state["predicted"] = [float(v) for v in state["tally"]]
            state["tally"] = torch.zeros(CLASSES, dtype=torch.long)
        x, y = batch(g)
        start = draw_start(case, x, g) if case.attack else None
        optimizer.zero_grad()
        loss, xa = official_step(case, model, x, y, start, epoch, state)
        if case.awp_warmup is not None:
            loss = awp_update(case, model, optimizer, loss, lambda: F.cross_entropy(model(xa), y), epoch)
        else:
            loss.backward()
            optimizer.step()
        # RobustLT's base code (PGD-AT's and AWP's reference) runs them for plain PGD-AT and AWP as well.
        if case.robustlt is not None or case.name in ("pgd-at", "awp"):
            logging_passes(case, model, x, y, xa, state)
        tensors[f"step{k}.images"] = x
        tensors[f"step{k}.labels"] = y.double()
        if start is not None:
            tensors[f"step{k}.start"] = start
            tensors[f"step{k}.eps"] = budgets(case, epoch)[0][y]
        if xa is not None:
            tensors[f"step{k}.adversarial"] = xa
        tensors[f"step{k}.loss"] = loss.detach().reshape(1)
        tensors.update(weights(model, f"after{k}"))
        losses.append(loss.item())
    if case.name.endswith("reat"):
        tensors["reat.tally"] = state["tally"].double()
    return tensors


def loss_fixtures():
    """Part a: values and gradients of each loss for fixed logits (and features), with absent classes."""
    g = torch.Generator().manual_seed(7)
    t = {}
    logits = f32(2 * torch.randn(12, CLASSES, generator=g))
    other = f32(logits + 0.5 * torch.randn(12, CLASSES, generator=g))
    cosine = f32(torch.tanh(torch.randn(12, CLASSES, generator=g)))
    cosine_adv = f32(torch.tanh(torch.randn(12, CLASSES, generator=g)))
    features = f32(torch.randn(12, 6, generator=g))
    # Classes 5, 6 and 8 absent; 7 and 9 are REAT tail classes.
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 7, 9, 9, 0])
    t["labels"] = y.double()
    t["logits"], t["logits_other"], t["cosine"], t["cosine_adv"], t["features"] = (
        logits, other, cosine, cosine_adv, features)
    predicted = [11, 0, 3, 2, 1, 0, 0, 4, 1, 2]  # last epoch's adversarial predictions (two classes never)
    t["reat.predicted"] = torch.tensor(predicted, dtype=torch.float64)
    t["reat.weights"] = reat_class_weights(COUNTS, predicted)

    def record(name, fn, *inputs):
        leaves = [v.clone().requires_grad_(True) for v in inputs]
        value = fn(*leaves)
        grads = torch.autograd.grad(value, leaves)
        t[f"{name}.value"] = value.detach().reshape(1)
        for i, gr in enumerate(grads):
            t[f"{name}.grad{i}"] = gr

    record("cross_entropy", lambda z: F.cross_entropy(z, y), logits)
    record("balanced_softmax", lambda z: balanced_softmax(z, y, COUNTS), logits)
    record("trades_kl", lambda c, a: trades_kl_sum(a, c) / c.shape[0], logits, other)
    record("robal", lambda a, c: robal_margin_loss(a, y, COUNTS) + 6.0 * robal_kl(c, a), cosine_adv, cosine)
    record("reat_outer", lambda z, f: balanced_softmax(z, y, COUNTS) + reat_tail(f, y, COUNTS), logits, features)
    record("harl", lambda z: harl(F.cross_entropy(z, y, reduction="none"), y), logits)
    return t


def save(tensors, path):
    """Inputs (float32 values already) as float32, computed results as float64."""
    inputs = ("init.", "labels", "images", "start", "logits", "cosine", "features", "predicted")
    out = {k: (v.float() if any(p in k for p in inputs) else v).contiguous() for k, v in tensors.items()}
    save_file(out, str(path))


def main():
    OUT.mkdir(exist_ok=True)
    save(loss_fixtures(), OUT / "losses.safetensors")
    listing = []
    for i, case in enumerate(cases()):
        tensors = run_case(case, seed=100 + i)
        save(tensors, OUT / f"{case.name}.safetensors")
        listing.append({"name": case.name, "sets": case.sets, "step_epochs": STEP_EPOCHS,
                        "epochs": case.epochs, "lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY})
    (OUT / "cases.json").write_text(json.dumps({"counts": COUNTS, "cases": listing}, indent=1) + "\n")
    print(f"wrote {len(listing)} step fixtures and the loss fixtures to {OUT}")


if __name__ == "__main__":
    main()
