"""Puts a `tailguard bench` report beside its PyTorch twin's and prints the ratios.

Usage: compare.py TAILGUARD.json PYTORCH.json [--markdown]
time ratio = tailguard seconds per batch / PyTorch seconds per batch (below 1: tailguard is faster);
memory ratio = tailguard peak / PyTorch peak (process RSS on the CPU, allocated device memory on a GPU).
"""
import json
import sys


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        sys.exit(__doc__)
    markdown = "--markdown" in sys.argv
    ours, theirs = (json.load(open(p)) for p in args)
    index = {(r["arch"], r["workload"], r["batch"]): r for r in theirs["results"]}
    head = ["arch", "workload", "batch", "tailguard img/s", "PyTorch img/s", "time ratio", "tailguard GFLOP/s",
            "PyTorch GFLOP/s", "memory ratio"]
    rows = []
    for r in ours["results"]:
        t = index.get((r["arch"], r["workload"], r["batch"]))
        if t is None:
            continue
        memory = "-"
        if r.get("peak_memory_bytes") and t.get("peak_memory_bytes"):
            memory = f'{r["peak_memory_bytes"] / t["peak_memory_bytes"]:.2f}'
        rows.append([r["arch"], r["workload"], str(r["batch"]), f'{r["images_per_second"]:.2f}',
                     f'{t["images_per_second"]:.2f}', f'{r["median_seconds"] / t["median_seconds"]:.2f}',
                     f'{r["achieved_gflops"]:.1f}', f'{t["achieved_gflops"]:.1f}', memory])
    if ours.get("cpu"):
        print(f'CPU: {ours["cpu"]} (tailguard matrix-multiply kernels: {ours.get("cpu_matmul_kernels", "?")})')
    print(f'tailguard {ours["version"]} on {ours["backend"]} ({ours["threads"]} threads, matmul peak '
          f'{ours["matmul_peak_gflops"]:.0f} GFLOP/s) vs PyTorch {theirs["version"]} on {theirs["backend"]} '
          f'({theirs["threads"]} threads, matmul peak {theirs["matmul_peak_gflops"]:.0f} GFLOP/s)')
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + " --- |" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *rows)]
        for row in [head] + rows:
            print("  ".join(x.rjust(w) for x, w in zip(row, widths)))
    if not rows:
        sys.exit("no workload appears in both reports")


if __name__ == "__main__":
    main()
