#!/usr/bin/env python3
"""Writes the fixtures of tailguard's AutoAugment / RandAugment operations from torchvision on PIL images.

The official AT-BSL and RobustLT code augments PIL images (torchvision's CIFAR10 dataset yields them), so the
reference is torchvision's `_apply_op` on a PIL RGB image, whose arithmetic is Pillow's. Run from anywhere:

    pip install torch torchvision pillow
    python3 crates/longtail/tests/augment/generate.py

Writes cases.json (images, operations, magnitudes, the policy tables) and outputs.bin (the output images, u8, HWC,
concatenated) next to this script.
"""
import json
import pathlib

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms import AutoAugment, AutoAugmentPolicy, InterpolationMode, RandAugment
from torchvision.transforms.autoaugment import _apply_op

HERE = pathlib.Path(__file__).resolve().parent


def images():
    """Three deterministic RGB images: a textured 32x32, a low-contrast 32x32 and a non-square 12x20 (h x w)."""
    g = torch.Generator().manual_seed(7)
    out = []
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    base = torch.stack([4 * xx + 60 * torch.sin(yy / 5), 6 * yy, 128 + 90 * torch.cos((xx + yy) / 7)])
    noise = torch.randint(-40, 41, (3, 32, 32), generator=g).float()
    out.append((base + noise).clamp(0, 255).round().to(torch.uint8))
    low = 100 + torch.randint(0, 30, (3, 32, 32), generator=g)
    low[1] = low[1] // 2 + 90
    out.append(low.to(torch.uint8))
    out.append(torch.randint(0, 256, (3, 12, 20), generator=g).to(torch.uint8))
    return [img.permute(1, 2, 0).contiguous().numpy() for img in out]  # HWC


def to_pil(hwc):
    return Image.fromarray(hwc, mode="RGB")


def main():
    imgs = images()
    signed_bins = [1, 3, 9]
    cases, blobs, offset = [], [], 0

    def record(image_index, op, magnitude, result, extra):
        nonlocal offset
        array = np.asarray(result, dtype=np.uint8)
        assert array.shape == imgs[image_index].shape
        blobs.append(array.tobytes())
        cases.append(dict(image=image_index, op=op, magnitude=magnitude, offset=offset, **extra))
        offset += array.size

    tables = {}
    for bins, label in [(10, "autoaugment"), (31, "randaugment")]:
        for size in [(32, 32), (12, 20)]:
            space = AutoAugment()._augmentation_space(bins, size)
            tables[f"{label}-{size[0]}x{size[1]}"] = {
                op: [float(v) for v in (m.reshape(-1).tolist())] for op, (m, _) in space.items()
            }
    for i, hwc in enumerate(imgs):
        size = hwc.shape[:2]
        space = AutoAugment()._augmentation_space(10, size)
        for op, (mags, signed) in space.items():
            if mags.ndim == 0:
                record(i, op, 0.0, _apply_op(to_pil(hwc), op, 0.0, InterpolationMode.NEAREST, None), {})
                continue
            for b in (signed_bins if signed else range(10)):
                for sign in ([1.0, -1.0] if signed else [1.0]):
                    m = float(mags[b].item()) * sign
                    if op == "Posterize" and int(m) == 0:
                        continue
                    out = _apply_op(to_pil(hwc), op, m, InterpolationMode.NEAREST, None)
                    record(i, op, m, out, {})
    # Whole sub-policies on the first image: both operations applied, each sign.
    policies = AutoAugment(AutoAugmentPolicy.CIFAR10).policies
    for k, policy in enumerate(policies):
        for signs in [(1, 1), (0, 0)]:
            img = to_pil(imgs[0])
            space = AutoAugment()._augmentation_space(10, (32, 32))
            for j, (op, _, bin_) in enumerate(policy):
                mags, signed = space[op]
                m = float(mags[bin_].item()) if bin_ is not None else 0.0
                if signed and signs[j] == 0:
                    m *= -1.0
                img = _apply_op(img, op, m, InterpolationMode.NEAREST, None)
            record(0, "policy", float(k), img, {"signs": list(signs)})
    (HERE / "outputs.bin").write_bytes(b"".join(blobs))
    meta = dict(
        torchvision=torchvision.__version__,
        pillow=Image.__version__,
        images=[dict(height=h.shape[0], width=h.shape[1], pixels=h.reshape(-1).tolist()) for h in imgs],
        policies=[[[op, p, b] for (op, p, b) in pol] for pol in policies],
        magnitudes=tables,
        randaugment_ops=list(RandAugment()._augmentation_space(31, (32, 32)).keys()),
        cases=cases,
    )
    (HERE / "cases.json").write_text(json.dumps(meta))
    print(f"{len(cases)} cases, {offset} bytes")


if __name__ == "__main__":
    main()
