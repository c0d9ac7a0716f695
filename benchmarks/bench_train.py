"""Training-step benchmark: jaxreg's full step against a PyTorch twin (same network, loss and update), one process.

The step: on-device deformation augmentation, both encoder streams, three B-spline levels, NGF + curvature +
label loss at every level, Adam update; batch 30 x 112 x 112. The twin has the same parameter count and the same
initial loss (checked and printed). Median of --repeats steps after --warmup. Also: batched inference pairs/s,
and with --loop_epochs N the training loop itself (`jaxreg.training.train` on --loop_pairs phantom pairs, N
epochs in a temporary workdir: device-resident data, chunks of steps, one host read a chunk, a checkpoint an
epoch): its seconds a step over the epochs after the first (compilation), against the bare step (issue 21: within
5 %).

    /tmp/benchenv/bin/python benchmarks/bench_train.py [--repeats 20] [--threads 2] [--cpu_devices 2]
        [--torch_channels_last] [--jaxlib_convolutions] [--loop_epochs 3 --loop_pairs 640]

JAX runs with jaxreg.runtime.xla_cpu.prefer_eigen_convolutions, as the entry points do, unless --jaxlib_convolutions.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from timing import (add_runtime_flags, add_torch_device_flag, apply_runtime_flags, median_time,  # noqa: I001
                    torch_device, wall_times)  # benchmarks/ on sys.path
from jaxreg import bspline, evaluation
from jaxreg import training as train
from jaxreg.data import phantom_pairs
from jaxreg.models import level_shapes


def torch_twin(cfg: train.TrainConfig, image_shape, threads, channels_last=False, device="cpu"):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.set_default_device(device)  # the network, its inputs and every tensor below on the twin's device
    mc = cfg.model

    def block(cin, cout, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(mc.negative_slope))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            enc, cin = [], 1
            for i, f in enumerate(mc.encoder_features):
                enc.append(nn.Sequential(block(cin, f, 1 if i == 0 else 2), block(f, f)))
                cin = f
            self.enc = nn.ModuleList(enc)
            dec, heads, prev = [], [], 0
            for level, (f, factor) in enumerate(zip(mc.decoder_features, mc.level_factors)):
                idx = int(round(math.log2(mc.stride * factor)))
                cin = prev + 2 * mc.encoder_features[idx]
                dec.append(nn.Sequential(block(cin, f), block(f, f)))
                head = nn.Conv2d(f, 2, 3, 1, 1)
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
                heads.append(head)
                prev = f
            self.dec, self.heads = nn.ModuleList(dec), nn.ModuleList(heads)

        def forward(self, fixed, moving):
            def encode(x):
                feats = []
                for e in self.enc:
                    x = e(x)
                    feats.append(x)
                return feats

            ef, em = encode(fixed), encode(moving)
            outs, x = [], None
            for level, factor in enumerate(mc.level_factors):
                idx = int(round(math.log2(mc.stride * factor)))
                skip = torch.cat([ef[idx], em[idx]], 1)
                if x is not None:
                    x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
                    skip = torch.cat([x, skip], 1)
                x = self.dec[level](skip)
                h = self.heads[level](x)
                shape = tuple(n // factor for n in image_shape)
                target = bspline.control_grid_shape(shape, mc.stride)
                c = F.pad(h, (1, target[1] - h.shape[3] - 1, 1, target[0] - h.shape[2] - 1), mode="replicate")
                if outs:
                    ratio = mc.level_factors[level - 1] // factor
                    sub = [torch.from_numpy(np.asarray(bspline.subdivision_matrix(n, mc.stride * ratio))).to(device)
                           for n in shape]
                    c = c + torch.einsum("ij,bcjk,lk->bcil", sub[0], outs[-1] * ratio, sub[1])
                outs.append(c)
            return outs

    net = Net()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    mats = {}

    def field(c, shape, stride):  # (B, 2, K0, K1) -> (B, 2, H, W)
        key = (shape, stride)
        if key not in mats:
            mats[key] = [torch.from_numpy(np.asarray(bspline.basis_matrix(n, stride))).to(device) for n in shape]
        a, b = mats[key]
        return torch.einsum("ij,bcjk,lk->bcil", a, c, b)

    def sample(img, u):  # img (B, C, H, W), u (B, 2, H, W) pixels along (row, col)
        h, w = img.shape[2:]
        ys, xs = torch.meshgrid(torch.arange(h, dtype=img.dtype), torch.arange(w, dtype=img.dtype), indexing="ij")
        gy = (ys + u[:, 0]) * (2.0 / (h - 1)) - 1
        gx = (xs + u[:, 1]) * (2.0 / (w - 1)) - 1
        return F.grid_sample(img, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border",
                             align_corners=True)

    def ngf(f, m, eps):
        gf = [(f[:, :, 2:, 1:-1] - f[:, :, :-2, 1:-1]) / 2, (f[:, :, 1:-1, 2:] - f[:, :, 1:-1, :-2]) / 2]
        gm = [(m[:, :, 2:, 1:-1] - m[:, :, :-2, 1:-1]) / 2, (m[:, :, 1:-1, 2:] - m[:, :, 1:-1, :-2]) / 2]
        e2 = eps**2
        inner = gf[0] * gm[0] + gf[1] * gm[1] + e2
        r = inner**2 / ((gf[0] ** 2 + gf[1] ** 2 + e2) * (gm[0] ** 2 + gm[1] ** 2 + e2))
        return 0.5 * (1 - r).sum((1, 2, 3))

    def curvature(u):
        p = F.pad(u, (1, 1, 1, 1), mode="replicate")
        lap = p[:, :, 2:, 1:-1] + p[:, :, :-2, 1:-1] + p[:, :, 1:-1, 2:] + p[:, :, 1:-1, :-2] - 4 * u
        return 0.5 * (lap**2).sum((1, 2, 3))

    def augment(img, onehot):
        b = img.shape[0]
        g = bspline.control_grid_shape(image_shape, cfg.augment_stride)
        c = (torch.rand(b, 2, *g) * 2 - 1) * cfg.augment_max_disp
        u = field(c, image_shape, cfg.augment_stride)
        return sample(img, u), sample(onehot, u)

    def step(fixed, moving, fl, ml, deform=True):
        f, m = fixed[:, None].contiguous(memory_format=fmt), moving[:, None].contiguous(memory_format=fmt)
        fo = F.one_hot(fl.long(), 4).permute(0, 3, 1, 2).float().contiguous(memory_format=fmt)
        mo = F.one_hot(ml.long(), 4).permute(0, 3, 1, 2).float().contiguous(memory_format=fmt)
        if deform:
            f, fo = augment(f, fo)
            m, mo = augment(m, mo)
        controls = net(f, m)
        n_fine = image_shape[0] * image_shape[1]
        total = 0
        for c, factor, shape in zip(controls, mc.level_factors, level_shapes(image_shape, mc)):
            fl_, ml_ = F.avg_pool2d(f, factor), F.avg_pool2d(m, factor)
            fol, mol = F.avg_pool2d(fo, factor), F.avg_pool2d(mo, factor)
            u = field(c, shape, mc.stride)
            d = ngf(fl_, sample(ml_, u), cfg.epsilon)
            r = curvature(u)
            b = 0.5 * ((sample(mol, u) - fol) ** 2).sum((1, 2, 3)) / (0.5 * n_fine * 4)
            total = total + (cfg.delta * d + cfg.alpha * cfg.curvature_scale * r + cfg.beta * b).mean()
        opt.zero_grad()
        total.backward()
        opt.step()
        return float(total)  # reads the loss back: the step's device work is finished when this returns

    return net, step


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=30)
    ap.add_argument("--infer_chunk", type=int, nargs="+", default=[8],
                    help="Trainer.infer_chunk values to time inference with (a value >= 80: one batch per call)")
    ap.add_argument("--cpu_devices", type=int, default=1,
                    help="JAX CPU devices (jax_num_cpu_devices): step and inference data parallel over them")
    ap.add_argument("--torch_channels_last", action="store_true",
                    help="run the PyTorch twin in channels_last memory format (oneDNN's faster convolution layout)")
    ap.add_argument("--loop_epochs", type=int, default=0, help="also time the training loop over this many epochs "
                    "(>= 2: the first, with compilation, is left out); 0: skip")
    ap.add_argument("--loop_pairs", type=int, default=640, help="phantom training pairs of the loop (ACDC's folds "
                    "train on ~640)")
    ap.add_argument("--loop_augment", type=int, default=8, help="passes an epoch in the loop (the paper's 8)")
    add_runtime_flags(ap)
    add_torch_device_flag(ap)
    args = ap.parse_args()
    if args.loop_epochs == 1 or args.loop_epochs < 0:
        ap.error("--loop_epochs: 0 (skip) or >= 2 (the first epoch compiles and is left out)")
    eigen = apply_runtime_flags(args)
    if args.cpu_devices > 1:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    import torch

    cfg = train.TrainConfig(batch_size=args.batch)
    shape = (112, 112)
    ps = phantom_pairs(args.batch, seed=0)
    trainer = train.Trainer(cfg, shape)
    state = trainer.init_state()
    arrays = trainer.shard_batch(ps.fixed, ps.moving, ps.fixed_labels.astype(np.int32),
                                 ps.moving_labels.astype(np.int32))
    n_jax = sum(v.size for v in jax.tree.leaves(state["params"]))
    init_jax = float(train.loss_fn(state["params"], trainer.model, (
        jnp.asarray(ps.fixed), jnp.asarray(ps.moving), jax.nn.one_hot(ps.fixed_labels, 4),
        jax.nn.one_hot(ps.moving_labels, 4)), train.loss_weights(cfg), cfg)[0])
    device = torch_device(args.torch_device)
    net, tstep = torch_twin(cfg, shape, args.threads, args.torch_channels_last, device)
    n_torch = sum(p.numel() for p in net.parameters())
    tf, tm = (torch.from_numpy(a).to(device) for a in (ps.fixed, ps.moving))
    tfl, tml = (torch.from_numpy(a.astype(np.int64)).to(device) for a in (ps.fixed_labels, ps.moving_labels))
    init_torch = tstep(tf, tm, tfl, tml, deform=False)
    box = {"state": state}
    weights = train.loss_weights(cfg)

    def jax_step():
        box["state"], m = trainer.step(box["state"], *arrays, jax.random.key(0), jnp.asarray(True), weights)
        jax.block_until_ready(m)

    t_jax = median_time(jax_step, args.warmup, args.repeats)
    t_torch = median_time(lambda: tstep(tf, tm, tfl, tml), args.warmup, args.repeats)
    params = box["state"]["params"]
    big = np.concatenate([ps.fixed] * 8), np.concatenate([ps.moving] * 8)
    pps = {}
    for chunk in args.infer_chunk:
        tr = dataclasses.replace(trainer, infer_chunk=chunk)
        best = min(wall_times(lambda: evaluation.predict(tr, params, *big, batch_size=80), warmup=1, repeats=3))
        pps[chunk] = len(big[0]) / best
    print(f"XLA_FLAGS {os.environ.get('XLA_FLAGS', '')!r}; Eigen convolutions (jaxreg.runtime.xla_cpu): {eigen}")
    print(f"parameters: jax {n_jax}, torch {n_torch}; initial loss (no augmentation): jax {init_jax:.3f}, "
          f"torch {init_torch:.3f}")
    print(f"| step (batch {args.batch} x 112 x 112, augmentation, 3 levels, Adam) | JAX s | PyTorch s | JAX/PyTorch |")
    print("|---|---|---|---|")
    layout = "channels_last" if args.torch_channels_last else "NCHW"
    print(f"| median of {args.repeats}, JAX on {trainer.num_devices} {jax.devices()[0].platform} device(s), PyTorch "
          f"{layout} on {device} | {t_jax:.3f} | "
          f"{t_torch:.3f} | "
          f"{t_jax / t_torch:.2f} |")
    for chunk, v in pps.items():
        print(f"inference (batched 80, chunks of {chunk} per device, {trainer.num_devices} device(s), after compile, "
              f"best of 3): {v:.0f} pairs/s")
    steps = math.ceil(0.9 * 706 * cfg.augment / cfg.batch_size) * cfg.epochs
    print(f"paper recipe, one fold (~{steps} steps): JAX ~{steps * t_jax / 60:.0f} min, "
          f"PyTorch ~{steps * t_torch / 60:.0f} min at these step times")
    if args.loop_epochs:
        per_step, n_steps = loop_seconds_a_step(cfg, args.loop_pairs, args.loop_epochs, args.loop_augment)
        print(f"training loop (jaxreg.training.train, {args.loop_pairs} phantom pairs, x{args.loop_augment}, "
              f"{n_steps} steps an epoch, epochs 2..{args.loop_epochs}): {per_step:.4f} s a step against the bare "
              f"step's {t_jax:.4f} s: {per_step / t_jax:.3f}x")


def loop_seconds_a_step(cfg, n_pairs: int, epochs: int, augment: int) -> tuple[float, int]:
    """(seconds a step of `jaxreg.training.train` over epochs 2..`epochs` (metrics.jsonl), steps an epoch) on
    `n_pairs` phantom pairs in a temporary workdir."""
    import tempfile

    from jaxreg.training import workdir as wd

    pairs = phantom_pairs(n_pairs, seed=1)
    loop_cfg = dataclasses.replace(cfg, epochs=epochs, augment=augment)
    with tempfile.TemporaryDirectory() as tmp:
        train.train(loop_cfg, pairs, tmp, progress=False)
        recs = wd.read_metrics(f"{tmp}/metrics.jsonl")
    per_epoch = [r["seconds"] for r in recs[1:]]
    n_steps = recs[1]["steps"] - recs[0]["steps"]
    return float(np.mean(per_epoch)) / n_steps, n_steps


if __name__ == "__main__":
    main()
