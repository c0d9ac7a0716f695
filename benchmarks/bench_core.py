"""Core benchmark: value+gradient times of jaxreg's maths layer against PyTorch peers, in one process.

Rows: (a) NGF on 30x112x112 and 1x96^3; (b) control grid -> dense B-spline field -> linear warp ->
NGF + curvature + label SSD, gradient w.r.t. the control points, on 30x112x112 and 1x96^3 (stride 8), twice: as
the peers compute it (curvature of the dense field, the one-hot labels warped per channel) and through jaxreg's
routes for the same value (`bspline.curvature` from the control grid, `warp.warp_labels` on the integer map).
Peers: deepali (evaluate_cubic_bspline + warp_image) and MONAI (deepali's B-spline + monai Warp), with the same
loss formulas written in torch. Median of --repeats runs after --warmup runs.

Run in the benchmark's own environment (see docs/performance.md):
    python -m venv /tmp/benchenv && /tmp/benchenv/bin/pip install torch==2.13.0 hf-deepali monai -e .
    /tmp/benchenv/bin/python benchmarks/bench_core.py
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp

from timing import add_torch_device_flag, median_time, torch_device, torch_synchronize  # benchmarks/ on sys.path
from jaxreg import bspline, losses, warp


# ---------------------------------------------------------------- JAX side
def jax_ngf_fn(shape):
    f = jax.random.uniform(jax.random.key(0), shape)
    m = jax.random.uniform(jax.random.key(1), shape)
    step = jax.jit(jax.value_and_grad(lambda mm: jnp.sum(jax.vmap(losses.ngf)(f, mm))))
    return lambda: jax.block_until_ready(step(m))


def jax_pipeline_fn(batch, spatial, stride, n_labels=4, form="dense"):
    """form "dense": curvature of the dense field, the one-hot moving labels warped channel by channel (the peers'
    way); "grid": the same loss through jaxreg's cheaper routes, curvature from the control grid
    (`bspline.curvature`) and the integer label map warped once per corner for all classes (`warp.warp_labels`)."""
    nd = len(spatial)
    grid = bspline.control_grid_shape(spatial, stride)
    key = jax.random.key(2)
    f = jax.random.uniform(key, (batch,) + spatial)
    m = jax.random.uniform(jax.random.fold_in(key, 1), (batch,) + spatial)
    lf = jax.nn.one_hot(jax.random.randint(jax.random.fold_in(key, 2), (batch,) + spatial, 0, n_labels), n_labels)
    labels_m = jax.random.randint(jax.random.fold_in(key, 3), (batch,) + spatial, 0, n_labels)
    lm = jax.nn.one_hot(labels_m, n_labels)
    c = jax.random.normal(jax.random.fold_in(key, 4), (batch,) + grid + (nd,))

    def loss_dense(ci, fi, mi, lfi, lmi):
        u = bspline.bspline_displacement(ci, spatial, stride)
        return losses.ngf(fi, warp.warp(mi, u)) + losses.curvature(u) + losses.label_ssd(lfi, warp.warp(lmi, u))

    def loss_grid(ci, fi, mi, lfi, labels):
        u = bspline.bspline_displacement(ci, spatial, stride)
        return (losses.ngf(fi, warp.warp(mi, u)) + bspline.curvature(ci, spatial, stride)
                + losses.label_ssd(lfi, warp.warp_labels(labels, u, n_labels)))

    loss_one, moving_labels = {"dense": (loss_dense, lm), "grid": (loss_grid, labels_m)}[form]
    step = jax.jit(jax.value_and_grad(lambda cc: jnp.sum(jax.vmap(loss_one)(cc, f, m, lf, moving_labels))))
    return lambda: jax.block_until_ready(step(c))


# ---------------------------------------------------------------- torch side
def torch_peers(nthreads, device="cpu"):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(nthreads)
    torch.set_default_device(device)  # every tensor below is made on the peers' device

    def t_grad(img, nd):  # central differences on the interior, (B, ...) -> list of (B, interior)
        sl = [slice(None)] + [slice(1, -1)] * nd
        out = []
        for k in range(nd):
            hi, lo = list(sl), list(sl)
            hi[k + 1], lo[k + 1] = slice(2, None), slice(None, -2)
            out.append((img[tuple(hi)] - img[tuple(lo)]) * 0.5)
        return out

    def t_ngf(f, m, nd, eps=0.1):
        gf, gm = t_grad(f, nd), t_grad(m, nd)
        e2 = eps**2
        inner = sum(a * b for a, b in zip(gf, gm)) + e2
        nf = sum(a * a for a in gf) + e2
        nm = sum(b * b for b in gm) + e2
        return 0.5 * torch.sum(1 - inner**2 / (nf * nm))

    def t_curv(u, nd):  # u (B, nd, ...)
        pad = F.pad(u, (1, 1) * nd, mode="replicate")
        lap = 0
        centre = [slice(None), slice(None)] + [slice(1, -1)] * nd
        for k in range(nd):
            hi, lo = list(centre), list(centre)
            hi[k + 2], lo[k + 2] = slice(2, None), slice(None, -2)
            lap = lap + pad[tuple(hi)] - 2 * u + pad[tuple(lo)]
        return 0.5 * torch.sum(lap**2)

    def ngf_fn(shape):
        nd = len(shape) - 1
        f = torch.rand(shape)
        m = torch.rand(shape, requires_grad=True)

        def run():
            m.grad = None
            loss = t_ngf(f, m, nd)
            loss.backward()
            torch_synchronize(device)

        return run

    def pipeline_fn(batch, spatial, stride, sampler, n_labels=4):
        from deepali.core.bspline import cubic_bspline_control_point_grid_size, evaluate_cubic_bspline

        nd = len(spatial)
        size_xyz = tuple(reversed(spatial))
        grid = tuple(reversed(cubic_bspline_control_point_grid_size(size_xyz, stride)))
        f = torch.rand((batch, 1) + spatial)
        m = torch.rand((batch, 1) + spatial)
        lf = F.one_hot(torch.randint(0, n_labels, (batch,) + spatial), n_labels).movedim(-1, 1).float()
        lm = F.one_hot(torch.randint(0, n_labels, (batch,) + spatial), n_labels).movedim(-1, 1).float()
        c = torch.randn((batch, nd) + grid, requires_grad=True)
        if sampler == "deepali":
            from deepali.core.enum import PaddingMode, Sampling
            from deepali.core.flow import warp_image
            from deepali.core.grid import Grid

            cube = Grid(size=size_xyz).coords(align_corners=True).unsqueeze(0)  # (1, ..., nd) xyz order
            scale = torch.tensor([2.0 / (n - 1) for n in size_xyz])

            def sample(img, u):  # u (B, nd, ...) pixels, array-axis order -> deepali's xyz flow in cube units
                flow = u.flip(1).movedim(1, -1) * scale
                return warp_image(img, cube, flow, mode=Sampling.LINEAR, padding=PaddingMode.BORDER, align_corners=True)

        else:
            from monai.networks.blocks import Warp

            mw = Warp(mode="bilinear", padding_mode="border")

            def sample(img, u):
                return mw(img, u)

        def run():
            c.grad = None
            u = evaluate_cubic_bspline(c, stride=stride, shape=spatial)
            loss = t_ngf(f[:, 0], sample(m, u)[:, 0], nd) + t_curv(u, nd) + 0.5 * torch.sum((sample(lm, u) - lf) ** 2)
            loss.backward()
            torch_synchronize(device)

        return run

    return ngf_fn, pipeline_fn


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip_peers", action="store_true", help="JAX rows only (no torch needed)")
    add_torch_device_flag(ap)
    args = ap.parse_args()
    rows = []
    cases = [
        ("NGF", "30x112x112", jax_ngf_fn, ((30, 112, 112),), ("ngf", (30, 112, 112))),
        ("NGF", "1x96^3", jax_ngf_fn, ((1, 96, 96, 96),), ("ngf", (1, 96, 96, 96))),
        ("bspline+warp+NGF+curv+SSD", "30x112x112 s8", jax_pipeline_fn, (30, (112, 112), 8), ("pipe", 30, (112, 112), 8)),
        ("bspline+warp+NGF+curv+SSD", "1x96^3 s8", jax_pipeline_fn, (1, (96, 96, 96), 8), ("pipe", 1, (96, 96, 96), 8)),
    ]
    device = None if args.skip_peers else torch_device(args.torch_device)
    peers = None if args.skip_peers else torch_peers(args.threads, device)
    for name, size, make_jax, jax_args, spec in cases:
        peer_times = {}
        if peers is not None:
            ngf_fn, pipeline_fn = peers
            if spec[0] == "ngf":
                peer_times["torch"] = median_time(ngf_fn(spec[1]), args.warmup, args.repeats)
            else:
                for sampler in ("deepali", "monai"):
                    peer_times[sampler] = median_time(pipeline_fn(*spec[1:], sampler=sampler), args.warmup, args.repeats)
        if spec[0] == "ngf":
            rows.append((name, size, median_time(make_jax(*jax_args), args.warmup, args.repeats), peer_times))
            continue
        # the same loss two ways: as the peers compute it, and through jaxreg's control-grid / label-map routes
        for form, label in (("dense", "dense curv, one-hot warp"), ("grid", "grid curv, warp_labels")):
            t = median_time(make_jax(*jax_args, form=form), args.warmup, args.repeats)
            rows.append((f"{name} ({label})", size, t, peer_times))
    print(f"jax {jax.__version__}, devices {jax.devices()}, PyTorch peers on {device or '-'}, repeats "
          f"{args.repeats}, threads {args.threads}")
    print(f"| {'work (value+grad)':52s} | {'size':14s} | {'JAX ms':>8s} | {'peers ms':32s} | {'JAX/best peer':>13s} |")
    print(f"|{'-' * 54}|{'-' * 16}|{'-' * 10}|{'-' * 34}|{'-' * 15}|")
    for name, size, tj, pt in rows:
        peers_s = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in pt.items()) or "-"
        ratio = f"{tj / min(pt.values()):.2f}x" if pt else "-"
        print(f"| {name:52s} | {size:14s} | {tj * 1e3:8.1f} | {peers_s:32s} | {ratio:>13s} |")


if __name__ == "__main__":
    main()
