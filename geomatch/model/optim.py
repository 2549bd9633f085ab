"""AdamW on dicts of NumPy arrays, with ``torch.optim.AdamW`` semantics.

One step, for every parameter p with gradient g (t = step number from 1)::

    p <- p * (1 - lr * weight_decay)              # decoupled weight decay
    m <- beta1 * m + (1 - beta1) * g
    v <- beta2 * v + (1 - beta2) * g**2
    p <- p - (lr / (1 - beta1**t)) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

which is exactly the update order and bias correction of PyTorch's AdamW
(non-amsgrad, non-foreach, single parameter group).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np

__all__ = ["AdamW"]


class AdamW:
    """AdamW optimizer updating a dict of arrays in place.

    Parameters
    ----------
    params : dict name -> ndarray
        The arrays to train (updated in place, e.g. ``head.parameters()``).
    lr : float
        Learning rate (default 1e-4, the training default of geomatch).
    betas : (float, float)
    eps : float
    weight_decay : float
        Decoupled weight decay coefficient (torch's default 0.01).
    """

    def __init__(self, params: Dict[str, np.ndarray], lr: float = 1e-4,
                 betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be non-negative, got {weight_decay!r}")
        self.params = params
        self.lr = float(lr)
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.t = 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads: Dict[str, np.ndarray], lr: Optional[float] = None) -> None:
        """Apply one update with ``grads`` (same names and shapes as the parameters)."""
        lr = self.lr if lr is None else float(lr)
        missing = set(self.params) - set(grads)
        if missing:
            raise ValueError(f"grads: missing gradients for {sorted(missing)}")
        for k, g in grads.items():
            if k in self.params and np.shape(g) != self.params[k].shape:
                raise ValueError(f"grads: {k} has shape {np.shape(g)}, expected "
                                 f"{self.params[k].shape}")
        self.t += 1
        b1, b2 = self.betas
        bc1 = 1.0 - b1 ** self.t
        bc2 = 1.0 - b2 ** self.t
        step_size = lr / bc1
        sq_bc2 = math.sqrt(bc2)
        for k, p in self.params.items():
            g = np.asarray(grads[k], dtype=p.dtype)
            m, v = self.m[k], self.v[k]
            if self.weight_decay:
                p *= p.dtype.type(1.0 - lr * self.weight_decay)
            m *= p.dtype.type(b1)
            m += p.dtype.type(1.0 - b1) * g
            v *= p.dtype.type(b2)
            v += p.dtype.type(1.0 - b2) * (g * g)
            denom = np.sqrt(v)
            denom /= p.dtype.type(sq_bc2)
            denom += p.dtype.type(self.eps)
            p -= p.dtype.type(step_size) * (m / denom)

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Arrays describing the optimizer state (for checkpoints)."""
        out = {"adamw/t": np.array(self.t, dtype=np.int64),
               "adamw/hyper": np.array([self.lr, self.betas[0], self.betas[1], self.eps,
                                        self.weight_decay])}
        for k in self.params:
            out["adamw/m/" + k] = self.m[k]
            out["adamw/v/" + k] = self.v[k]
        return out

    def load_state_dict(self, state: Dict[str, np.ndarray], *, source: str = "state") -> None:
        """Restore :meth:`state_dict` output (shapes must match; ``source`` names
        the file in error messages)."""
        try:
            t = int(state["adamw/t"])
            for k, p in self.params.items():
                for kind, store in (("m", self.m), ("v", self.v)):
                    a = np.asarray(state[f"adamw/{kind}/{k}"])
                    if a.shape != p.shape:
                        raise ValueError(f"{source}: optimizer state {kind}/{k} has shape "
                                         f"{a.shape}, expected {p.shape}")
                    store[k] = np.array(a, dtype=p.dtype)
        except KeyError as exc:
            raise ValueError(f"{source}: optimizer state is missing {exc}") from None
        self.t = t
