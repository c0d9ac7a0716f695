"""Registration loss terms of Hering et al. 2019 on ONE sample, in N-D (pure JAX, no Flax; batch with jax.vmap).

Discretisation: integrals are midpoint sums `prod(spacing) * sum(...)` over the pixels where the integrand is
defined; `spacing` is the pixel size per axis (None = 1, i.e. pixel units; a scalar or one value per axis, may be
a traced array). Displacements are in pixels; where a term needs physical displacement it multiplies component k
by spacing[k]. Images are `(*spatial)`; one-hot label maps and displacements are channel-last `(*spatial, C)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxreg._checks import check_displacement, check_same_shape, check_spatial, shape_str, spacing_array

__all__ = ["image_gradient", "ngf", "laplacian", "curvature", "label_ssd", "dice_loss"]


def _gradient_components(image, h):
    """Central differences on the interior, one array per axis (no stacking: keeps XLA:CPU fusions elementwise)."""
    ndim = image.ndim
    interior = tuple(slice(1, -1) for _ in range(ndim))
    grads = []
    for k in range(ndim):
        hi = list(interior)
        lo = list(interior)
        hi[k] = slice(2, None)
        lo[k] = slice(None, -2)
        grads.append((image[tuple(hi)] - image[tuple(lo)]) / (2.0 * h[k]))
    return grads


def image_gradient(image, spacing=None):
    """Central-difference gradient on the interior: `(*S)` -> `(*(S-2), ndim)`, intensity per unit of `spacing`."""
    ndim = check_spatial("image", image)
    if min(image.shape) < 3:
        raise ValueError(f"image needs at least 3 pixels along every axis for central differences; got {shape_str(image)}")
    return jnp.stack(_gradient_components(jnp.asarray(image), spacing_array(spacing, ndim)), axis=-1)


def ngf(fixed, warped, eps: float = 0.1, spacing=None, squared: bool = True):
    """Normalised gradient fields distance: fixed, warped `(*S)` -> scalar.

    `1/2 * integral(1 - r)` with `r = (<gM, gF>_eps / (|gM|_eps |gF|_eps))**2`, `<a, b>_eps = a.b + eps**2`
    (Ruehaak et al. 2013); `squared=False` gives the unsquared form printed in Hering et al. 2019. `eps` is in
    intensity per unit of `spacing`. Gradients are central differences on the interior; NGF(F, F) == 0.
    """
    check_spatial("fixed", fixed)
    check_same_shape("fixed", fixed, "warped", warped)
    if min(jnp.shape(fixed)) < 3:
        raise ValueError(f"images need at least 3 pixels along every axis for central differences; got {shape_str(fixed)}")
    if isinstance(eps, (int, float)) and not eps > 0:
        raise ValueError(f"eps must be > 0; got {eps!r}")
    ndim = jnp.ndim(fixed)
    h = spacing_array(spacing, ndim)
    g_f = _gradient_components(jnp.asarray(fixed), h)
    g_m = _gradient_components(jnp.asarray(warped), h)
    eps2 = jnp.asarray(eps, g_f[0].dtype) ** 2
    inner = sum(a * b for a, b in zip(g_f, g_m)) + eps2
    norm2 = (sum(a * a for a in g_f) + eps2) * (sum(b * b for b in g_m) + eps2)
    r = inner * inner / norm2 if squared else inner * jax.lax.rsqrt(norm2)
    return 0.5 * jnp.prod(h) * jnp.sum(1.0 - r)


def _laplacian_plane(x, h):
    """Neumann Laplacian of one scalar plane: neighbours by shifted slices, the ghost pixel repeating the edge."""
    out = 0.0
    for k in range(x.ndim):
        n = x.shape[k]
        if n < 2:
            continue
        first = jax.lax.slice_in_dim(x, 0, 1, axis=k)
        last = jax.lax.slice_in_dim(x, n - 1, n, axis=k)
        up = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=k), last], axis=k)
        down = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, n - 1, axis=k)], axis=k)
        out = out + (up + down - 2.0 * x) / h[k] ** 2
    return out


def laplacian(field, spacing=None):
    """5-point (2D) / 7-point (3D) Laplacian with Neumann (replicate) boundary: `(*S, C)` -> `(*S, C)`."""
    ndim = field.ndim - 1
    h = spacing_array(spacing, ndim)
    return jnp.stack([_laplacian_plane(field[..., c], h) for c in range(field.shape[-1])], axis=-1)


def curvature(u, spacing=None):
    """Curvature regulariser `1/2 * integral(sum_k (Laplace u_k)**2)`: u `(*S, ndim)` pixels -> scalar.

    With `spacing`, u is taken to physical units (u_k * spacing_k) and differentiated physically; in 2D with
    isotropic spacing the value does not depend on it. Neumann boundary (replicate) for the Laplacian.
    """
    ndim = check_displacement("u", u)
    u = jnp.asarray(u)
    h = spacing_array(spacing, ndim)
    total = 0.0
    for k in range(ndim):
        lap = _laplacian_plane(u[..., k] * h[k], h)
        total = total + jnp.sum(lap * lap)
    return 0.5 * jnp.prod(h) * total


def _check_onehot(fixed_onehot, warped_onehot):
    check_same_shape("fixed_onehot", fixed_onehot, "warped_onehot", warped_onehot)
    if fixed_onehot.ndim < 2 or fixed_onehot.ndim > 4:
        raise ValueError(f"one-hot maps must be (*spatial, C) with 1..3 spatial axes; got {shape_str(fixed_onehot)}")
    return fixed_onehot.ndim - 1


def label_ssd(fixed_onehot, warped_onehot, spacing=None):
    """Label distance `1/2 * integral(|b_M(y) - b_F|**2)`: one-hot maps `(*S, C)` -> scalar (the paper's B term)."""
    ndim = _check_onehot(fixed_onehot, warped_onehot)
    h = spacing_array(spacing, ndim)
    return 0.5 * jnp.prod(h) * jnp.sum((warped_onehot - fixed_onehot) ** 2)


def dice_loss(fixed_onehot, warped_onehot, include_background: bool = False, smooth: float = 1e-5):
    """Soft Dice loss `1 - mean_c (2|F_c W_c| + s) / (|F_c| + |W_c| + s)`: one-hot maps `(*S, C)` -> scalar.

    Channel 0 is background and is left out unless `include_background`.
    """
    ndim = _check_onehot(fixed_onehot, warped_onehot)
    f, w = fixed_onehot, warped_onehot
    if not include_background:
        if f.shape[-1] < 2:
            raise ValueError(f"dice_loss without background needs >= 2 channels; got {shape_str(f)}")
        f, w = f[..., 1:], w[..., 1:]
    axes = tuple(range(ndim))
    inter = jnp.sum(f * w, axis=axes)
    denom = jnp.sum(f, axis=axes) + jnp.sum(w, axis=axes)
    return 1.0 - jnp.mean((2.0 * inter + smooth) / (denom + smooth))
