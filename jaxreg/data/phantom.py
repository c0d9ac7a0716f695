"""Synthetic short-axis cine-MR phantom: ED/ES slice pairs with ACDC labels and the exact displacement between them.

The ED frame is an analytic model (LV blood pool, myocardial ring with papillary muscles, RV crescent with a thin
free wall, pericardial fat, chest wall, subcutaneous fat, lungs, liver, air) rendered with partial-volume edges,
blur, a smooth multiplicative bias field and Rician noise. The ES frame renders the same model at phi(x), where
phi (ES -> ED positions) is an incompressible radial contraction of the LV (so the wall thickens), an extra RV
contraction, a twist and a translation of the heart, and a damped version of that motion for the surroundings.
Hence `true_displacement` for "ED->ES" is exactly phi(x) - x (pixels, jaxreg convention); for "ES->ED" it is the
inverse map, solved by fixed-point iteration on the analytic phi. Everything is jitted JAX, deterministic from a seed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg.data.pairs import PairSet

_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")


def _sig(x):
    return jax.nn.sigmoid(2.0 * x)  # partial-volume edge about one pixel wide


def _patient_params(key, size):
    ks = jax.random.split(key, 16)
    u = lambda k, lo, hi: jax.random.uniform(k, (), minval=lo, maxval=hi)  # noqa: E731
    s = size / 112.0
    group = jax.random.randint(ks[15], (), 0, 5)
    # group-typical shape: DCM large thin weak, HCM small thick strong, MINF weak, RV large RV
    r_endo = u(ks[0], 12.0, 17.0) * s * jnp.where(group == 0, 1.25, jnp.where(group == 1, 0.8, 1.0))
    wall = u(ks[1], 5.0, 7.5) * s * jnp.where(group == 1, 1.5, jnp.where(group == 0, 0.8, 1.0))
    contraction = u(ks[2], 0.45, 0.75) * jnp.where((group == 0) | (group == 2), 0.45, 1.0)  # K fraction of cavity area
    return dict(
        group=group,
        center=jnp.array([size / 2.0, size / 2.0]) + jax.random.normal(ks[3], (2,)) * 5.0 * s,
        r_endo=r_endo,
        wall=wall,
        ecc=u(ks[4], 0.85, 1.0),
        ecc_angle=u(ks[5], 0.0, np.pi),
        contraction=contraction,
        twist=u(ks[6], -0.15, 0.15),
        shift=jax.random.normal(ks[7], (2,)) * 2.5 * s,
        rv_angle=u(ks[8], 0.0, 2 * np.pi),
        rv_size=u(ks[9], 1.0, 1.35) * jnp.where(group == 4, 1.3, 1.0),
        rv_contraction=u(ks[10], 0.15, 0.35) * jnp.where(group == 4, 0.5, 1.0),
        body=jnp.array([u(ks[11], 0.55, 0.7), u(ks[12], 0.75, 0.95)]) * size,
        body_angle=u(ks[13], -0.3, 0.3),
        key=ks[14],
    )


def _rot(v0, v1, angle):
    """Rotate the vector field (v0, v1) by `angle` (component planes, not a stacked (..., 2) array: XLA:CPU is
    several times faster on planes than on a minor axis of size 2)."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    return c * v0 - s * v1, s * v0 + c * v1


def _slice_geometry(p, z):
    """Per-slice radii: the LV narrows towards the apex, the RV more so."""
    lv = 1.0 - 0.45 * z
    return dict(
        r_endo=p["r_endo"] * lv,
        r_epi=p["r_endo"] * lv + p["wall"] * (1.0 - 0.15 * z),
        rv_scale=p["rv_size"] * (1.0 - 0.55 * z),
    )


def _phi(x0, x1, p, g, size):
    """ES -> ED positions: pixel coordinate planes (x0, x1) `(H, W)` each -> (y0, y1)."""
    c_es = p["center"] + p["shift"]
    q0, q1 = x0 - c_es[0], x1 - c_es[1]
    r2 = q0 * q0 + q1 * q1
    k_area = p["contraction"] * g["r_endo"] ** 2  # cavity area lost at ES
    r_es2 = g["r_endo"] ** 2 - k_area
    a = r2 / r_es2
    # r_ED^2 = r^2 + K h(a), h(a) = a / (1 + a^8)^(1/8): uniform scaling inside the ES cavity, area-preserving
    # (incompressible) beyond it, so the wall thickens as the cavity shrinks
    t = jax.lax.rsqrt(jax.lax.rsqrt(jax.lax.rsqrt(1.0 + (a * a) ** 4)))
    scale = jnp.sqrt(1.0 + k_area * t / r_es2)
    r_out = g["r_epi"] + 3.0
    r = jnp.sqrt(r2 + 1e-12)
    w = 0.15 + 0.85 * jnp.exp(-jnp.maximum(r - r_out, 0.0) ** 2 / (2.0 * (0.12 * size) ** 2))
    ang = -p["twist"] * w  # |angle| <= 0.15: 4th-order cos/sin are exact to 1e-6 and far cheaper per pixel
    ang2 = ang * ang
    cos, sin = 1.0 - ang2 / 2.0 + ang2 * ang2 / 24.0, ang * (1.0 - ang2 / 6.0 + ang2 * ang2 / 120.0)
    qs0, qs1 = q0 * scale, q1 * scale
    y0 = x0 + w * (p["center"][0] + cos * qs0 - sin * qs1 - x0)
    y1 = x1 + w * (p["center"][1] + sin * qs0 + cos * qs1 - x1)
    # RV: pull its free wall in at ES (ES positions map outwards to ED)
    rv0, rv1 = jnp.cos(p["rv_angle"]), jnp.sin(p["rv_angle"])
    qr0, qr1 = x0 - (c_es[0] + rv0 * g["r_epi"] * 1.05), x1 - (c_es[1] + rv1 * g["r_epi"] * 1.05)
    sig = g["r_epi"] * g["rv_scale"] * 1.1
    r_epi_es = jnp.sqrt(jnp.maximum(g["r_epi"] ** 2 - k_area, 1.0))
    bump = jnp.exp(-(qr0 * qr0 + qr1 * qr1) / (2.0 * sig**2)) * jax.nn.sigmoid(r - r_epi_es - 2.0)  # RV side only
    k = p["rv_contraction"] * bump
    return y0 + k * qr0, y1 + k * qr1


def _ellipse_rho(y0, y1, c0, c1, a0, a1):
    """Normalised radius of the axis-aligned ellipse centred at (c0, c1) with semi-axes (a0, a1)."""
    d0, d1 = (y0 - c0) / a0, (y1 - c1) / a1
    return jnp.sqrt(d0 * d0 + d1 * d1)


def _render(y0, y1, p, g, size):
    """ED model at positions (y0, y1) `(H, W)` each -> (intensity, labels)."""
    c = p["center"]
    q0, q1 = _rot(y0 - c[0], y1 - c[1], -p["ecc_angle"])
    rho = jnp.sqrt(q0 * q0 + (q1 / p["ecc"]) ** 2 + 1e-12)
    rv0, rv1 = jnp.cos(p["rv_angle"]), jnp.sin(p["rv_angle"])
    crv0, crv1 = c[0] + rv0 * g["r_epi"] * 1.05, c[1] + rv1 * g["r_epi"] * 1.05
    qr0, qr1 = _rot(y0 - crv0, y1 - crv1, -p["rv_angle"])  # axis 0 along the LV->RV direction
    rv_a, rv_b = g["r_epi"] * 0.75 * g["rv_scale"], g["r_epi"] * 1.45 * g["rv_scale"]
    rv_rho = jnp.sqrt((qr0 / rv_a) ** 2 + (qr1 / rv_b) ** 2 + 1e-12)
    in_rv_shape = _sig((1.0 - rv_rho) * rv_a)
    outside_lv = _sig(rho - g["r_epi"] - 1.0)
    rv_cav = in_rv_shape * outside_lv
    rv_wall = _sig((1.0 + 2.2 / rv_a - rv_rho) * rv_a) * outside_lv * (1.0 - rv_cav)
    lv_cav = _sig(g["r_endo"] - rho)
    myo = _sig(g["r_epi"] - rho) * (1.0 - lv_cav)
    # papillary muscles: two dark blobs in the cavity, labelled cavity as in ACDC
    pap = 0.0
    for ang in (0.9, 2.3):
        pc0 = c[0] + g["r_endo"] * 0.62 * jnp.cos(p["rv_angle"] + ang)
        pc1 = c[1] + g["r_endo"] * 0.62 * jnp.sin(p["rv_angle"] + ang)
        pap = pap + _sig(g["r_endo"] * 0.18 - _ellipse_rho(y0, y1, pc0, pc1, 1.0, 1.0))
    pap = jnp.clip(pap, 0, 1) * lv_cav
    # surroundings (fixed in space apart from the damped motion in phi)
    mid = size / 2.0
    qb0, qb1 = _rot(y0 - mid, y1 - mid, -p["body_angle"])
    body_rho = _ellipse_rho(qb0, qb1, 0.0, 0.0, p["body"][0], p["body"][1])
    body = _sig((1.0 - body_rho) * p["body"][0])
    subcut = _sig((body_rho - 0.9) * p["body"][0])
    lung = 0.0
    for side in (-1.0, 1.0):
        lc0 = mid + 0.05 * size + side * 0.1 * size * rv0
        lc1 = mid + side * 0.33 * size + side * 0.1 * size * rv1
        lung = lung + _sig((1.0 - _ellipse_rho(y0, y1, lc0, lc1, 0.28 * size, 0.16 * size)) * 0.12 * size)
    liver_rho = _ellipse_rho(y0, y1, mid + 0.42 * size, mid - 0.2 * size, 0.22 * size, 0.3 * size)
    liver = _sig((1.0 - liver_rho) * 0.15 * size)
    heart_rho = jnp.minimum(rho / g["r_epi"], rv_rho)
    fat_band = _sig((heart_rho - 1.0) * 6.0) * _sig((1.25 - heart_rho) * 6.0)
    # sin(3 theta + phase) from the unit vector by the triple-angle formulas (no per-pixel atan2/sin)
    inv = jax.lax.rsqrt(q0 * q0 + q1 * q1 + 1e-9)
    ct, st = q0 * inv, q1 * inv
    s3, c3 = st * (3.0 - 4.0 * st * st), ct * (4.0 * ct * ct - 3.0)
    fat_mod = 0.5 + 0.5 * (s3 * rv0 + c3 * rv1)
    img = 0.32 * body
    img = img + (0.8 - img) * subcut * body
    img = img + (0.05 - img) * jnp.clip(lung, 0, 1) * body
    img = img + (0.45 - img) * liver * body
    img = img + (0.75 - img) * fat_band * fat_mod
    img = img + (0.30 - img) * rv_wall
    img = img + (0.85 - img) * rv_cav
    img = img + (0.27 - img) * myo
    img = img + (0.92 - img) * lv_cav
    img = img + (0.35 - img) * pap
    labels = jnp.where(rho < g["r_endo"], 3, jnp.where(rho < g["r_epi"], 2, jnp.where(rv_cav > 0.5, 1, 0)))
    labels = labels.astype(jnp.uint8)
    return img, labels


def _blur(img, sigma):
    x = jnp.arange(-2, 3, dtype=jnp.float32)
    k = jnp.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    pad = jnp.pad(img, 2, mode="edge")
    out = sum(k[i] * pad[i : i + img.shape[0], 2:-2] for i in range(5))
    pad = jnp.pad(out, ((0, 0), (2, 2)), mode="edge")
    return sum(k[i] * pad[:, i : i + img.shape[1]] for i in range(5))


def _hash_uniform(seed, shape):
    """Uniform [0, 1) per pixel from a counter hash (murmur3's 32-bit finaliser of index * golden + seed).

    Noise only needs independent-looking, deterministic values; XLA:CPU's rng_bit_generator cost ~19 ns a number
    here (most of the phantom's time), this ~1 ns.
    """
    h = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape) * jnp.uint32(0x9E3779B9) + seed
    h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
    h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
    h = h ^ (h >> 16)
    return (h >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def _rician(img, sigma, seeds):
    """Rician magnitude |img + sigma (n1 + i n2)|, n1, n2 iid standard normal, from two uint32 seeds; `img` any shape."""
    # (n1, n2) = R (cos t, sin t) drawn by Box-Muller:
    # |.|^2 = img^2 + 2 img sigma R cos t + sigma^2 R^2, R^2 = -2 log(u1), t uniform. cos t of a uniform angle has
    # the law of sin(w), w uniform in [-pi/2, pi/2]: a degree-9 Taylor polynomial (error < 4e-6) instead of XLA:CPU's
    # range-reduced cos, which cost more than the rest of the acquisition.
    r2 = -2.0 * jnp.log1p(-_hash_uniform(seeds[0], img.shape))
    w = (_hash_uniform(seeds[1], img.shape) - 0.5) * np.pi
    w2 = w * w
    cos_t = w * (1.0 - w2 / 6.0 * (1.0 - w2 / 20.0 * (1.0 - w2 / 42.0 * (1.0 - w2 / 72.0))))
    # >= 0 in exact arithmetic; the clamp absorbs rounding where img ~ -sigma R cos t (air)
    return jnp.sqrt(jnp.maximum(img * img + sigma * (2.0 * img * jnp.sqrt(r2) * cos_t + sigma * r2), 0.0))


def _acquire(img, key, size):
    """Blur, smooth bias field and Rician noise, then scale to [0, 1]."""
    k1, k4, kn = jax.random.split(key, 3)
    seeds = jax.random.bits(kn, (2,), jnp.uint32)
    img = _blur(img, 0.7)
    coef = jax.random.normal(k1, (6,)) * 0.12
    yy = jnp.linspace(-1.0, 1.0, size)[:, None]
    xx = jnp.linspace(-1.0, 1.0, size)[None, :]
    bias = 1.0 + coef[0] * yy + coef[1] * xx + coef[2] * yy * xx + coef[3] * yy**2 + coef[4] * xx**2
    img = img * jnp.clip(bias, 0.6, 1.4)
    sigma = jax.random.uniform(k4, (), minval=0.015, maxval=0.045)
    noisy = _rician(img, sigma, seeds)
    return jnp.clip(noisy / (jnp.max(img) + 1e-6), 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("size", "inverse_iters"))
def _make_pair(key, z, size, inverse_iters):
    kp, ka, kb = jax.random.split(key, 3)
    p = _patient_params(kp, size)
    g = _slice_geometry(p, z)
    x0 = jnp.broadcast_to(jnp.arange(size, dtype=jnp.float32)[:, None], (size, size))
    x1 = jnp.broadcast_to(jnp.arange(size, dtype=jnp.float32)[None, :], (size, size))
    img_ed, lab_ed = _render(x0, x1, p, g, size)
    phi0, phi1 = _phi(x0, x1, p, g, size)
    img_es, lab_es = _render(phi0, phi1, p, g, size)
    u_ed_to_es = jnp.stack([phi0 - x0, phi1 - x1], -1)

    def newton(_, y):  # inverse: solve phi(y) = x per pixel; phi is pointwise, so jvps give each 2x2 Jacobian
        f = lambda a, b: _phi(a, b, p, g, size)  # noqa: E731
        one, zero = jnp.ones_like(x0), jnp.zeros_like(x0)
        (r0, r1), jvp = jax.linearize(f, *y)  # phi once, then its per-pixel Jacobian columns
        a00, a10 = jvp(one, zero)  # d phi / d y0
        a01, a11 = jvp(zero, one)  # d phi / d y1
        e0, e1 = r0 - x0, r1 - x1
        det = a00 * a11 - a01 * a10
        return y[0] - (a11 * e0 - a01 * e1) / det, y[1] - (-a10 * e0 + a00 * e1) / det

    if inverse_iters:
        y0, y1 = jax.lax.fori_loop(0, inverse_iters, newton, (2.0 * x0 - phi0, 2.0 * x1 - phi1))
        u_es_to_ed = jnp.stack([y0 - x0, y1 - x1], -1)
    else:
        u_es_to_ed = jnp.zeros_like(u_ed_to_es)
    return (_acquire(img_ed, ka, size), lab_ed, _acquire(img_es, kb, size), lab_es, u_ed_to_es, u_es_to_ed, p["group"])


@functools.partial(jax.jit, static_argnames=("size", "inverse_iters", "chunk"))
def _make_batch(keys, zs, size, inverse_iters, chunk=8):
    """vmap over `chunk` pairs inside a sequential map: intermediates stay in cache (1.4x faster than one vmap)."""
    n = keys.shape[0]
    pad = -n % chunk
    keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, 0)]) if pad else keys
    zs = jnp.concatenate([zs, jnp.repeat(zs[-1:], pad, 0)]) if pad else zs
    out = jax.lax.map(lambda kz: jax.vmap(lambda k, z: _make_pair(k, z, size, inverse_iters))(*kz),
                      (keys.reshape(-1, chunk), zs.reshape(-1, chunk)))
    return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[:n], out)


def phantom_pairs(
    n: int,
    seed: int = 0,
    size: int = 112,
    directions=("ED->ES",),
    slices_per_patient: int = 8,
    apex_fraction: float = 0.8,
    inverse_iters: int = 4,
) -> PairSet:
    """`n` synthetic slice pairs per direction, `(N, size, size)`, with `true_displacement` `(N, size, size, 2)` pixels.

    Pair i belongs to patient i // slices_per_patient (shared anatomy and motion), at slice position
    z = (i % slices_per_patient) / (slices_per_patient - 1) * apex_fraction from base (0) towards apex.
    """
    if n <= 0:
        raise ValueError(f"n must be positive; got {n}")
    for d in directions:
        if d not in ("ED->ES", "ES->ED"):
            raise ValueError(f"directions must be drawn from ('ED->ES', 'ES->ED'); got {d!r}")
    idx = np.arange(n)
    pat = idx // slices_per_patient
    zpos = (idx % slices_per_patient) / max(slices_per_patient - 1, 1) * apex_fraction
    root = jax.random.key(seed)
    # patient anatomy from the patient key, acquisition noise from the slice key
    keys = jax.vmap(lambda pt, i: jax.random.fold_in(jax.random.fold_in(root, pt), i))(jnp.asarray(pat), jnp.asarray(idx))
    pkeys = jax.vmap(lambda pt: jax.random.fold_in(root, pt))(jnp.asarray(pat))
    keys = jax.vmap(lambda pk, k: jax.random.wrap_key_data(
        jnp.concatenate([jax.random.key_data(pk)[:1], jax.random.key_data(k)[1:]])))(pkeys, keys)
    iters = inverse_iters if "ES->ED" in directions else 0
    out = jax.device_get(_make_batch(keys, jnp.asarray(zpos, jnp.float32), size, iters, chunk=min(8, n)))
    img_ed, lab_ed, img_es, lab_es, u_fwd, u_inv, group = (np.asarray(a) for a in out)
    parts = []
    for d in directions:
        if d == "ED->ES":  # moving ED warped onto fixed ES
            parts.append((img_es, img_ed, lab_es, lab_ed, u_fwd))
        else:
            parts.append((img_ed, img_es, lab_ed, lab_es, u_inv))
    cat = lambda i: parts[0][i] if len(parts) == 1 else np.concatenate([p[i] for p in parts])  # noqa: E731
    m = len(directions)
    pid = np.array([f"phantom{p:04d}" for p in pat])
    return PairSet(
        fixed=cat(0).astype(np.float32, copy=False),
        moving=cat(1).astype(np.float32, copy=False),
        fixed_labels=cat(2).astype(np.uint8, copy=False),
        moving_labels=cat(3).astype(np.uint8, copy=False),
        patient=np.tile(pid, m),
        slice_index=np.tile(idx % slices_per_patient, m),
        direction=np.repeat(np.asarray(directions), n),
        crop_origin=np.zeros((n * m, 2), int),
        spacing=np.full((n * m, 2), 1.5, np.float32),
        group=np.tile(np.asarray(_GROUPS)[group], m),
        true_displacement=cat(4).astype(np.float32, copy=False),
        affines={p: {"affine": np.diag([1.5, 1.5, 10.0, 1.0]), "shape": (size, size, slices_per_patient),
                     "spacing": (1.5, 1.5, 10.0)} for p in sorted(set(pid.tolist()))},
    )
