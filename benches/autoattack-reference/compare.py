#!/usr/bin/env python3
"""AutoAttack from the reference code (fra31/auto-attack, packaged as `pyautoattack`) on a tailguard model.

    pip install torch safetensors pyautoattack
    python3 compare.py --weights model.safetensors --arch small-cnn-16 --test test.tar.gz --eps 8/255 --out ref.json
    python3 compare.py ... --norm L2 --eps 0.5 --attacks apgd-ce,apgd-t     # tailguard's aa-lite in L2
    python3 compare.py ... --version rand                                 # tailguard's aa-rand
    python3 compare.py ... --version plus                                 # tailguard's aa-plus

The weights are a `tailguard export` of the checkpoint (PyTorch names); the images are the test split of a CIFAR
binary archive that `tailguard data --export` wrote, in file order, so `tailguard eval --attacks aa` on the same
archive attacks exactly the same images. `run.sh` does both and prints them side by side.
"""
import argparse
import logging
import json
import tarfile
import time
from fractions import Fraction

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


class SmallCnn(nn.Module):
    """tailguard's small-cnn-W (crates/models/src/small_cnn.rs): conv(W)-conv(2W, /2)-conv(4W, /2), each with
    BatchNorm and ReLU, global average pooling, linear head."""

    def __init__(self, width, classes):
        super().__init__()
        shapes = [(3, width, 1), (width, 2 * width, 2), (2 * width, 4 * width, 2)]
        self.convs = nn.ModuleList([nn.Conv2d(i, o, 3, s, 1, bias=False) for i, o, s in shapes])
        self.norms = nn.ModuleList([nn.BatchNorm2d(o) for _, o, _ in shapes])
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        return self.head(x.mean(dim=(2, 3)))


def load_test(path):
    """(images N x 3 x 32 x 32 in [0, 1], labels) of the archive's test batch, in file order."""
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("test_batch.bin"))
        raw = np.frombuffer(tar.extractfile(member).read(), dtype=np.uint8).reshape(-1, 3073)
    labels = torch.from_numpy(raw[:, 0].astype(np.int64))
    images = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return images, labels


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", required=True)
    parser.add_argument("--arch", default="small-cnn-16")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--test", required=True)
    parser.add_argument("--eps", default="8/255")
    parser.add_argument("--out", required=True)
    parser.add_argument("--attacks", default="standard",
                        help="standard, or a comma-separated list run alone (e.g. fab-t or square)")
    parser.add_argument("--norm", default="Linf", choices=["Linf", "L2"])
    parser.add_argument("--version", default="standard", choices=["standard", "rand", "plus"],
                        help="the reference's version whose settings the attacks take")
    args = parser.parse_args()
    from pyautoattack import AutoAttack

    logging.basicConfig(level=logging.DEBUG, format="%(message)s")  # the reference's per-stage robust accuracy

    if not args.arch.startswith("small-cnn"):
        raise SystemExit("only tailguard's small-cnn-W is defined here")
    width = int(args.arch.rsplit("-", 1)[1]) if args.arch.count("-") == 2 else 16
    model = SmallCnn(width, args.classes)
    model.load_state_dict(load_file(args.weights))
    model.eval()
    torch.set_num_threads(2)
    x, y = load_test(args.test)
    eps = float(Fraction(args.eps))
    adversary = AutoAttack(model, norm=args.norm, eps=eps, version=args.version, seed=0, device="cpu")
    if args.attacks != "standard":
        # A custom list keeps the version's settings of each attack (fab-t sets its own single restart).
        adversary.attacks_to_run = args.attacks.split(",")
    start = time.time()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    adv, _ = adversary.run_standard_evaluation(x, y, batch_size=250)
    with torch.no_grad():
        robust = (model(adv).argmax(1) == y).float().mean().item()
    result = {"attacks": args.attacks, "version": args.version, "norm": args.norm, "images": len(y), "eps": eps, "clean_accuracy": clean, "robust_accuracy": robust,
              "seconds": time.time() - start, "torch": torch.__version__}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
