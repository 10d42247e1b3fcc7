"""PyTorch twin of `tailguard bench`: the same models, steps and attacks in eager PyTorch.

Prints (or writes) a JSON report with the same fields as `tailguard bench --json`, so that `compare.py` can put the
two side by side. Run through `benches/pytorch/run.sh`, which runs both in one command.
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- models (the definitions of crates/models; parameter counts are checked below) ----

class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        shortcut = self.shortcut(pre) if self.shortcut is not None else x
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


def stage_plan(stem, widths, blocks):
    plan, c_in = [], stem
    for stage, (c_out, count) in enumerate(zip(widths, blocks)):
        for b in range(count):
            plan.append((c_in, c_out, 2 if stage > 0 and b == 0 else 1))
            c_in = c_out
    return plan


class ResNet(nn.Module):
    def __init__(self, plan, stem, classes, preact):
        super().__init__()
        self.preact = preact
        self.stem = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.stem_bn = None if preact else nn.BatchNorm2d(stem)
        block = PreActBlock if preact else BasicBlock
        self.blocks = nn.Sequential(*[block(*p) for p in plan])
        features = plan[-1][1]
        self.final_bn = nn.BatchNorm2d(features) if preact else None
        self.head = nn.Linear(features, classes)

    def forward(self, x):
        x = self.stem(x)
        if self.stem_bn is not None:
            x = F.relu(self.stem_bn(x))
        x = self.blocks(x)
        if self.final_bn is not None:
            x = F.relu(self.final_bn(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Linear(nn.Module):
    """A linear classifier on the flattened pixels (tailguard's `linear`: the GPU check's rehearsal uses it)."""

    def __init__(self, classes):
        super().__init__()
        self.head = nn.Linear(3 * 32 * 32, classes)

    def forward(self, x):
        return self.head(x.flatten(1))


class SmallCnn(nn.Module):
    """tailguard's small-cnn-W: conv(W)-conv(2W, /2)-conv(4W, /2), each with BatchNorm and ReLU, global average
    pooling, a linear head (the model of the AutoAttack reference comparison and the CPU study)."""

    def __init__(self, width, classes):
        super().__init__()
        shapes = small_cnn_layers(width)
        self.convs = nn.ModuleList([nn.Conv2d(i, o, 3, s, 1, bias=False) for i, o, s in shapes])
        self.norms = nn.ModuleList([nn.BatchNorm2d(o) for _, o, _ in shapes])
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        return self.head(x.mean(dim=(2, 3)))


def small_cnn_layers(width):
    return [(3, width, 1), (width, 2 * width, 2), (2 * width, 4 * width, 2)]


def small_cnn_width(arch):
    """16 for `small-cnn`, W for `small-cnn-W`, None for other architectures."""
    if arch == "small-cnn":
        return 16
    if arch.startswith("small-cnn-"):
        return int(arch[len("small-cnn-"):])
    return None


def build(arch, classes):
    if arch == "linear":
        return Linear(classes)
    if small_cnn_width(arch) is not None:
        return SmallCnn(small_cnn_width(arch), classes)
    if arch in ("resnet18", "preact-resnet18"):
        return ResNet(stage_plan(64, [64, 128, 256, 512], [2, 2, 2, 2]), 64, classes, arch.startswith("preact"))
    if arch.startswith("wrn-"):
        depth, widen = (int(v) for v in arch[4:].split("-"))
        n = (depth - 4) // 6
        return ResNet(stage_plan(16, [16 * widen, 32 * widen, 64 * widen], [n] * 3), 16, classes, True)
    raise SystemExit(f"unsupported architecture {arch}")


def forward_multiply_adds(arch, classes):
    """Convolutions and linear layers, as tailguard's flops.rs."""
    if arch == "linear":
        return 3 * 32 * 32 * classes
    width = small_cnn_width(arch)
    if width is not None:
        total, pixels = 0, 32 * 32
        for c_in, c_out, stride in small_cnn_layers(width):
            pixels //= stride * stride
            total += c_in * c_out * 9 * pixels
        return total + 4 * width * classes
    if arch.startswith("wrn-"):
        depth, widen = (int(v) for v in arch[4:].split("-"))
        stem, plan = 16, stage_plan(16, [16 * widen, 32 * widen, 64 * widen], [(depth - 4) // 6] * 3)
    else:
        stem, plan = 64, stage_plan(64, [64, 128, 256, 512], [2, 2, 2, 2])
    pixels = 32 * 32
    total = 3 * stem * 9 * pixels
    for c_in, c_out, stride in plan:
        pixels //= stride * stride
        total += c_in * c_out * 9 * pixels + c_out * c_out * 9 * pixels
        if stride != 1 or c_in != c_out:
            total += c_in * c_out * pixels
    return total + plan[-1][1] * classes


# ---- attacks ----

def pgd(model, x, y, eps, step, steps, start):
    """L-inf PGD on cross-entropy, model in eval mode (as tailguard's FrozenModel)."""
    if start == "uniform":
        delta = torch.empty_like(x).uniform_(-eps, eps)
    else:  # TAET: x + 0.001 N(0, 1)
        delta = 0.001 * torch.randn_like(x)
    x_adv = (x + delta).clamp(0, 1).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def checkpoints(n):
    """Iterations after which APGD checks its step size (AutoAttack's windows; N = 100: 22, 41, ..., 99)."""
    window, smallest, shrink = max(int(0.22 * n), 1), max(int(0.06 * n), 1), max(int(0.03 * n), 1)
    marks, at = [], window
    while at <= n:
        marks.append(at)
        window = max(window - shrink, smallest)
        at += window
    return marks


def apgd_ce(model, x, y, eps, iterations, rho=0.75):
    """One APGD-CE run on every image (AutoAttack's algorithm; no early stop)."""
    n = x.shape[0]
    marks = set(checkpoints(iterations))
    t = 2 * torch.rand_like(x) - 1
    x_adv = (x + eps * t / t.flatten(1).abs().max(1)[0].view(-1, 1, 1, 1)).clamp(0, 1)

    def loss_and_grad(z):
        z = z.clone().requires_grad_(True)
        logits = model(z)
        losses = F.cross_entropy(logits, y, reduction="none")
        (g,) = torch.autograd.grad(losses.sum(), z)
        return losses.detach(), g.detach(), logits.detach()

    step = torch.full((n, 1, 1, 1), 2 * eps, device=x.device)
    loss, grad, logits = loss_and_grad(x_adv)
    best_loss, x_best, x_best_adv = loss.clone(), x_adv.clone(), x_adv.clone()
    best_at_mark, step_at_mark = best_loss.clone(), step.clone()
    increases = torch.zeros(n, device=x.device)
    reduced = torch.ones(n, dtype=torch.bool, device=x.device)
    x_prev = x_adv.clone()
    last_mark = 0
    for k in range(iterations):
        z = torch.min(torch.max(x_adv + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
        momentum = 1.0 if k == 0 else 0.75
        z2 = x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev)
        x_prev = x_adv
        x_adv = torch.min(torch.max(z2, x - eps), x + eps).clamp(0, 1)
        loss_new, grad_new, logits = loss_and_grad(x_adv)
        wrong = logits.argmax(1) != y
        x_best_adv[wrong] = x_adv[wrong]
        increases += (loss_new > loss).float()
        loss = loss_new
        better = loss > best_loss
        x_best[better] = x_adv[better]
        best_loss = torch.where(better, loss, best_loss)
        grad = grad_new
        if k + 1 in marks:
            window = k + 1 - last_mark
            oscillating = increases <= window * rho
            stalled = (~reduced) & (best_at_mark >= best_loss)
            halve = oscillating | stalled
            reduced = halve
            step_at_mark = step.clone()
            best_at_mark = best_loss.clone()
            step[halve] /= 2
            x_adv[halve] = x_best[halve]
            increases.zero_()
            last_mark = k + 1
    return x_best_adv


# ---- workloads ----

def harl(per_sample, y, classes, weights=(0.1, 0.1, 0.1)):
    one_hot = F.one_hot(y, classes).float()
    class_loss = (one_hot * per_sample[:, None]).sum(0) / (one_hot.sum(0) + 1e-10)
    bcl = class_loss.mean()
    hdl = ((class_loss - bcl) ** 2).mean()
    rcel = ((class_loss / (class_loss.sum() + 1e-10)) ** 2).sum()
    return weights[0] * bcl + weights[1] * hdl + weights[2] * rcel


FORWARD_EQUIVALENTS = {
    "natural": lambda a: 3,
    "pgd10-at": lambda a: 10 * 2 + 3,
    "taet-stage2": lambda a: 10 * 2 + 1 + 3,
    "pgd20-eval": lambda a: 20 * 2 + 1,
    "apgd-ce-eval": lambda a: (a + 1) * 2 + 1,
}


def make_step(workload, model, x, y, classes, apgd_iterations):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def train_on(images, loss_fn, extra_clean_forward=False):
        model.train()
        if extra_clean_forward:
            model(x)
        logits = model(images)
        loss = loss_fn(logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def attack(**kw):
        model.eval()
        return pgd(model, x, y, **kw)

    if workload == "natural":
        return lambda: train_on(x, lambda l: F.cross_entropy(l, y))
    if workload == "pgd10-at":
        return lambda: train_on(attack(eps=8 / 255, step=2 / 255, steps=10, start="uniform"),
                                lambda l: F.cross_entropy(l, y))
    if workload == "taet-stage2":
        return lambda: train_on(attack(eps=0.031, step=0.003, steps=10, start="gaussian"),
                                lambda l: harl(F.cross_entropy(l, y, reduction="none"), y, classes), True)
    if workload == "pgd20-eval":
        def run():
            model.eval()
            adv = pgd(model, x, y, 8 / 255, 2 / 255, 20, "uniform")
            with torch.no_grad():
                return (model(adv).argmax(1) == y).sum().item()
        return run
    if workload == "apgd-ce-eval":
        def run():
            model.eval()
            adv = apgd_ce(model, x, y, 8 / 255, apgd_iterations)
            with torch.no_grad():
                return (model(adv).argmax(1) == y).sum().item()
        return run
    raise SystemExit(f"unknown workload {workload}")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(n, device):
    a = torch.rand(n, n, device=device) * 2 - 1
    b = torch.rand(n, n, device=device) * 2 - 1
    best = float("inf")
    for r in range(7):
        sync(device)
        t = time.perf_counter()
        (a @ b)[0, 0].item()
        if r >= 2:
            best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def peak_memory(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB; process-wide peak


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workloads", default="natural,pgd10-at,taet-stage2,pgd20-eval,apgd-ce-eval")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--apgd-iterations", type=int, default=100)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    peak = matmul_peak(args.matmul_size, device)
    results = []
    for arch in args.arch.split(","):
        for workload in args.workloads.split(","):
            model = build(arch, args.classes).to(device)
            x = torch.rand(args.batch, 3, 32, 32, device=device)
            y = torch.arange(args.batch, device=device) % args.classes
            step = make_step(workload, model, x, y, args.classes, args.apgd_iterations)
            print(f"{arch} {workload} batch {args.batch} ...", flush=True)
            for _ in range(args.warmup):
                step()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = []
            for _ in range(args.iterations):
                sync(device)
                t = time.perf_counter()
                step()
                sync(device)
                seconds.append(time.perf_counter() - t)
            median = sorted(seconds)[len(seconds) // 2]
            flops = 2 * forward_multiply_adds(arch, args.classes) * FORWARD_EQUIVALENTS[workload](args.apgd_iterations)
            ips = args.batch / median
            results.append({
                "arch": arch, "workload": workload, "batch": args.batch, "seconds": seconds,
                "median_seconds": median, "images_per_second": ips, "flops_per_image": flops,
                "achieved_gflops": flops * ips / 1e9, "fraction_of_matmul_peak": flops * ips / 1e9 / peak,
                "peak_memory_bytes": peak_memory(device),
            })
            print(f"  {ips:.2f} images/s ({median:.3f} s per batch)", flush=True)
    report = {
        "tool": "pytorch", "version": torch.__version__, "backend": str(device),
        "threads": torch.get_num_threads(), "matmul_size": args.matmul_size, "matmul_peak_gflops": peak,
        "results": results,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            f.write(text)
        import os
        os.replace(args.out + ".tmp", args.out)
    else:
        print(text)


if __name__ == "__main__":
    main()
