"""Per-layer convolution benchmark: XLA:CPU in two layouts against PyTorch, on the network's layer shapes.

For each 3x3 layer of the encoder (one stream, batch 30 x 112 x 112 input) it times the forward alone and the
forward with both gradients (input and kernel, what a training step runs), as medians of --repeats calls after
--warmup, in milliseconds:
  jaxreg: jaxreg.runtime.conv.conv_general_dilated, NHWC, what the network runs (stride 2: phase-split input gradient);
  jax NHWC: lax.conv_general_dilated with ("NHWC", "HWIO", "NHWC"), flax.linen.Conv's default;
  jax NCHW: the same convolution with ("NCHW", "OIHW", "NCHW");
  torch NCHW and torch channels_last (torch.nn.functional.conv2d, oneDNN), when torch is installed.
`--sweep C1 C2 ...` adds full-resolution C->C layers at those channel counts, to see which counts the CPU likes.

    /tmp/benchenv/bin/python benchmarks/bench_conv.py [--repeats 10] [--threads 2] [--sweep 8 16 24 32]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from timing import add_runtime_flags, apply_runtime_flags, median_time  # benchmarks/ is on sys.path
from jaxreg.runtime import conv

# (side, c_in, c_out, stride) of the encoder's 3x3 layers for RegNetConfig's default (16, 32, 32, 64, 64)
ENCODER_LAYERS = [(112, 1, 16, 1), (112, 16, 16, 1), (112, 16, 32, 2), (56, 32, 32, 1), (56, 32, 32, 2),
                  (28, 32, 32, 1), (28, 32, 64, 2), (14, 64, 64, 1), (14, 64, 64, 2), (7, 64, 64, 1)]


def jax_fns(batch, side, cin, cout, stride, layout, conv_fn=jax.lax.conv_general_dilated):
    """Jitted forward and forward+both-gradients for one SAME-padded 3x3 convolution (blocking thunks)."""
    dn = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")
    rng = np.random.default_rng(0)
    x_shape = (batch, side, side, cin) if layout == "NHWC" else (batch, cin, side, side)
    w_shape = (3, 3, cin, cout) if layout == "NHWC" else (cout, cin, 3, 3)
    x = jnp.asarray(rng.standard_normal(x_shape, np.float32))
    w = jnp.asarray(rng.standard_normal(w_shape, np.float32) * 0.1)

    def conv(x, w):
        return conv_fn(x, w, (stride, stride), "SAME", dimension_numbers=dn)

    y = conv(x, w)
    g = jnp.asarray(rng.standard_normal(y.shape, np.float32))
    fwd = jax.jit(conv)
    bwd = jax.jit(jax.grad(lambda x, w, g: jnp.vdot(conv(x, w), g), argnums=(0, 1)))
    return (lambda: fwd(x, w).block_until_ready(),
            lambda: jax.block_until_ready(bwd(x, w, g)))


def torch_fns(batch, side, cin, cout, stride, channels_last, threads):
    """Forward and forward+both-gradients in PyTorch (conv2d, padding 1), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cin, side, side, generator=gen).contiguous(memory_format=fmt).requires_grad_(True)
    w = (torch.randn(cout, cin, 3, 3, generator=gen) * 0.1).contiguous(memory_format=fmt).requires_grad_(True)
    y = torch.nn.functional.conv2d(x, w, stride=stride, padding=1)
    g = torch.randn(y.shape, generator=gen).contiguous(memory_format=fmt)

    def fwd():
        with torch.no_grad():
            torch.nn.functional.conv2d(x, w, stride=stride, padding=1)

    def bwd():
        torch.autograd.grad(torch.nn.functional.conv2d(x, w, stride=stride, padding=1), (x, w), g)

    return fwd, bwd


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads (XLA uses all the process's CPUs)")
    ap.add_argument("--sweep", type=int, nargs="*", default=[],
                    help="also time 112^2 C->C stride-1 layers at these channel counts")
    add_runtime_flags(ap)
    args = ap.parse_args()
    eigen = apply_runtime_flags(args)
    layers = ENCODER_LAYERS + [(112, c, c, 1) for c in args.sweep]
    cols = ["jaxreg", "jax NHWC", "jax NCHW", "torch NCHW", "torch CL"]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, Eigen convolutions (jaxreg.runtime.xla_cpu): {eigen}, "
          f"batch {args.batch}, "
          f"median of {args.repeats} after {args.warmup}; ms; fwd = forward, f+b = forward + input and kernel "
          "gradients; GFLOP/s of the forward's multiply-adds in brackets")
    print("| layer | " + " | ".join(f"{c} fwd | {c} f+b" for c in cols) + " | jaxreg / best torch (f+b) |")
    print("|---" * (2 * len(cols) + 2) + "|")
    totals = np.zeros(2 * len(cols))
    for side, cin, cout, stride in layers:
        out = side // stride
        flops = 2 * args.batch * out * out * cout * cin * 9
        row = []
        for i, col in enumerate(cols):
            if col == "jaxreg":
                fns = jax_fns(args.batch, side, cin, cout, stride, "NHWC", conv.conv_general_dilated)
            elif col.startswith("jax"):
                fns = jax_fns(args.batch, side, cin, cout, stride, col.split()[1])
            else:
                fns = torch_fns(args.batch, side, cin, cout, stride, col.endswith("CL"), args.threads)
            if fns is None:
                row += [float("nan"), float("nan")]
                continue
            row += [median_time(f, args.warmup, args.repeats) * 1e3 for f in fns]
        row = np.asarray(row)
        if (side, cin, cout, stride) in ENCODER_LAYERS:
            totals += row
        ratio = row[1] / np.nanmin([row[7], row[9]])
        cells = [f"{t:.1f} ({flops / t / 1e6:.0f})" if j % 2 == 0 else f"{t:.1f}" for j, t in enumerate(row)]
        name = f"{side}^2 {cin}->{cout}" + (" /2" if stride == 2 else "")
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    ratio = totals[1] / np.nanmin([totals[7], totals[9]])
    print("| encoder sum | " + " | ".join(f"{t:.1f}" for t in totals) + f" | {ratio:.2f} |")


if __name__ == "__main__":
    main()
