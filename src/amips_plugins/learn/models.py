"""Learned support functions (Olausson, Monteiro, Klein, Cuturi, ICML 2026).

The MIPS value sigma_K(q) = max_{x in K} q.x is the support function of the key set K: convex,
1-homogeneous, with gradient the best key. Two models approximate it:

- ``SupportNet``: an input-convex network f(q) ~ sigma_K(q); predicted key = grad_q f(q). With C
  outputs, f_c(q) ~ sigma_{K_c}(q) for each cluster c (a learned IVF router).
- ``KeyNet``: a network g(q) ~ argmax key, read directly; its score is <g(q), q> (Euler's identity
  for 1-homogeneous functions: sigma(q) = <grad sigma(q), q>).
- ``MaxAffineNet``: the one-layer input-convex network max_j q.p_j over pieces p_j picked among
  the keys that answer training queries; predicted key = its (softened) gradient, the best piece.

Both offer ``score(q) -> (n, C)`` and ``key(q) -> (n, d)`` (or ``(n, C, d)`` when C > 1).
"""

from __future__ import annotations

import io
import math
import os
import zipfile

import torch
import torch.nn.functional as F
from torch import nn

from .._io import atomic_path, key_fingerprint

__all__ = [
    "SupportNet",
    "KeyNet",
    "MaxAffineNet",
    "width_for_budget",
    "key_fingerprint",
    "load_model",
]

_FORMAT = "amips_plugins.model"
_VERSION = 1


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def width_for_budget(dim: int, num_params: int, depth: int, num_outputs: int = 1) -> int:
    """Hidden width whose network has about ``num_params`` parameters (the reference code uses
    about 0.2 * N * d for N keys of dimension d, with depth 8)."""
    # (depth - 1) w^2 + w (depth * (dim + 1) + num_outputs) + ... = num_params, solved for w.
    a, b = max(depth - 1, 1e-9), depth * (dim + 1) + num_outputs
    return max(1, int((-b + math.sqrt(b * b + 4 * a * num_params)) / (2 * a)))


class _LearnedMIPS(nn.Module):
    """What both models share: configuration, cost and persistence."""

    def __init__(self, **config):
        super().__init__()
        sizes = ("dim", "num_outputs", "width", "depth", "num_pieces")
        if any(config[name] < 1 for name in sizes if name in config):
            raise ValueError(
                f"{', '.join(n for n in sizes if n in config)} must be positive, got {config}"
            )
        self.config = dict(config)
        self.dim, self.num_outputs = config["dim"], config.get("num_outputs", 1)

    def _linears(self):
        return [m for m in self.modules() if isinstance(m, nn.Linear)]

    def multiply_adds(self) -> int:
        """Multiply-adds of one ``score`` evaluation per query."""
        return sum(m.in_features * m.out_features for m in self._linears())

    def key_multiply_adds(self) -> int:
        """Multiply-adds of one ``key`` evaluation per query."""
        return self.multiply_adds()

    #: Fingerprint of the keys the model was trained for (set by ``fit``), saved with it.
    key_fingerprint: dict | None = None

    def _blob(self) -> dict:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "class": type(self).__name__,
            "config": self.config,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "key_fingerprint": self.key_fingerprint,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write config, weights, format version and the key-set fingerprint, atomically."""
        with atomic_path(path) as tmp:
            torch.save(self._blob(), tmp)

    def to_bytes(self) -> bytes:
        """What ``save`` writes, in memory (``load_model`` reads it back)."""
        buf = io.BytesIO()
        torch.save(self._blob(), buf)
        return buf.getvalue()


class SupportNet(_LearnedMIPS):
    """Input-convex network f(q) ~ sigma_K(q), convex in q by construction.

    Hidden-path weights are stored unconstrained and made positive by softplus in ``forward``;
    activations are softplus with sharpness ``beta`` (convex, non-decreasing; a sharp one suits
    the piecewise-linear support function better); the input is re-injected at every layer
    through unconstrained weights; the last layer is linear. ``homogeneous=True`` evaluates
    ||q|| h(q / ||q||) instead, which is exactly 1-homogeneous (and 0 at q = 0).

    Parameters
    ----------
    dim : query dimension d
    num_outputs : C, one support value per key cluster (1: the whole key set)
    width, depth : hidden width and number of hidden layers
    homogeneous : wrap as ||q|| h(q / ||q||)
    beta : sharpness of the softplus activations (10 measured better than 1 or a leaky ReLU)
    """

    def __init__(
        self,
        dim: int,
        num_outputs: int = 1,
        width: int = 256,
        depth: int = 3,
        homogeneous: bool = False,
        beta: float = 10.0,
    ):
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta}")
        super().__init__(
            dim=dim,
            num_outputs=num_outputs,
            width=width,
            depth=depth,
            homogeneous=homogeneous,
            beta=beta,
        )
        self.homogeneous, self.beta = homogeneous, beta
        # Input re-injection into every hidden layer and the output.
        self.inputs = nn.ModuleList(
            [nn.Linear(dim, width) for _ in range(depth)] + [nn.Linear(dim, num_outputs)]
        )
        # Hidden path z_l -> z_{l+1}, made positive in forward; started small (mean 1 / width).
        shapes = [(width, width)] * (depth - 1) + [(num_outputs, width)]
        self.hidden_raw = nn.ParameterList(
            nn.Parameter(_inverse_softplus(torch.empty(s).uniform_(1e-3, 2.0 / width)))
            for s in shapes
        )

    def _convex(self, q: torch.Tensor) -> torch.Tensor:
        z = F.softplus(self.inputs[0](q), beta=self.beta)
        for raw, inject in zip(self.hidden_raw[:-1], self.inputs[1:-1]):
            z = F.softplus(F.linear(z, F.softplus(raw)) + inject(q), beta=self.beta)
        return F.linear(z, F.softplus(self.hidden_raw[-1])) + self.inputs[-1](q)

    def score(self, q: torch.Tensor) -> torch.Tensor:
        """Predicted support values, (n, C)."""
        if not self.homogeneous:
            return self._convex(q)
        norm = q.norm(dim=-1, keepdim=True)
        return norm * self._convex(q / norm.clamp_min(1e-12))

    forward = score

    def key(self, q: torch.Tensor) -> torch.Tensor:
        """Predicted best keys, the gradient of ``score``: (n, d), or (n, C, d) when C > 1.

        Works under ``torch.no_grad()``; in training mode the graph is kept so a loss on the keys
        can be back-propagated. C > 1 costs C backward passes.
        """
        with torch.enable_grad():
            x = q if q.requires_grad else q.detach().requires_grad_(True)
            f = self.score(x)
            keep = self.training and torch.is_grad_enabled()
            grads = [
                torch.autograd.grad(
                    f[:, c].sum(), x, create_graph=keep, retain_graph=keep or c + 1 < f.shape[1]
                )[0]
                for c in range(f.shape[1])
            ]
        return grads[0] if len(grads) == 1 else torch.stack(grads, dim=1)

    def multiply_adds(self) -> int:
        return super().multiply_adds() + sum(p.numel() for p in self.hidden_raw)

    def key_multiply_adds(self) -> int:
        # One backward pass per output costs about twice the forward pass.
        return self.multiply_adds() * (1 + 2 * self.num_outputs)


class KeyNet(_LearnedMIPS):
    """Network g(q) ~ argmax key, read directly; score(q) = <g(q), q>.

    An MLP (GELU) with ``depth`` hidden layers. With ``residual=True`` it predicts a correction
    to q and starts at g(q) = q (its last layer starts at zero).
    """

    def __init__(
        self,
        dim: int,
        num_outputs: int = 1,
        width: int = 256,
        depth: int = 3,
        residual: bool = True,
    ):
        super().__init__(
            dim=dim, num_outputs=num_outputs, width=width, depth=depth, residual=residual
        )
        self.residual = residual
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(dim if i == 0 else width, width), nn.GELU()]
        last = nn.Linear(width, num_outputs * dim)
        if residual:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def _keys(self, q: torch.Tensor) -> torch.Tensor:
        keys = self.net(q).view(q.shape[0], self.num_outputs, self.dim)
        return keys + q[:, None, :] if self.residual else keys

    def key(self, q: torch.Tensor) -> torch.Tensor:
        """Predicted best keys: (n, d), or (n, C, d) when C > 1."""
        keys = self._keys(q)
        return keys[:, 0] if self.num_outputs == 1 else keys

    def score(self, q: torch.Tensor) -> torch.Tensor:
        """<key(q), q> for every output: (n, C)."""
        return torch.einsum("ncd,nd->nc", self._keys(q), q)

    forward = score


class MaxAffineNet(_LearnedMIPS):
    """The one-layer input-convex network f(q) = max_j q.p_j, with its gradient as the key.

    With keys as pieces, f is a convex, 1-homogeneous lower bound of sigma_K, equal to it for
    every query whose best key is a piece, and its gradient (the best piece) is then the exact
    key. ``fit_max_affine`` picks the keys that answer the most training queries. The key is
    softened over the ``blend`` best pieces, key(q) = sum_j softmax_j(q^.p_j / (t s)) p_j with
    q^ = q / ||q|| and s the mean piece norm, so the temperature t is scale-free: t = 0 returns
    the best piece; a larger t averages near-ties, which lowers the squared error where the best
    piece is not the best key. score(q) = <key(q), q> (Euler's identity). The pieces are
    parameters, so ``fit`` can also train them by gradient.

    Parameters
    ----------
    dim : query dimension d
    num_pieces : number of pieces m (the layer's width)
    temperature : t >= 0
    blend : pieces averaged per query (the softmax beyond them is negligible at small t)
    """

    def __init__(self, dim: int, num_pieces: int, temperature: float = 0.1, blend: int = 64):
        if not temperature >= 0 or blend < 1:
            raise ValueError(
                f"temperature must be >= 0 and blend positive, got {temperature}, {blend}"
            )
        super().__init__(dim=dim, num_pieces=num_pieces, temperature=temperature, blend=blend)
        self.temperature, self.blend = float(temperature), min(blend, num_pieces)
        self.pieces = nn.Parameter(torch.zeros(num_pieces, dim))

    def key(self, q: torch.Tensor) -> torch.Tensor:
        """Predicted best keys, (n, d)."""
        unit = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        top, idx = (unit @ self.pieces.T).topk(self.blend, dim=-1)
        if self.temperature == 0:
            return self.pieces[idx[:, 0]]
        weights = torch.softmax(top / (self.temperature * self.pieces.norm(dim=1).mean()), dim=-1)
        return torch.einsum("nk,nkd->nd", weights, self.pieces[idx])

    def score(self, q: torch.Tensor) -> torch.Tensor:
        """<key(q), q>, (n, 1)."""
        return (self.key(q) * q).sum(-1, keepdim=True)

    forward = score

    def key_multiply_adds(self) -> int:
        # Every piece's inner product, then the weighted sum of the blended ones.
        return (self.pieces.shape[0] + self.blend) * self.dim

    def multiply_adds(self) -> int:
        return self.key_multiply_adds() + self.dim


_CLASSES = {"SupportNet": SupportNet, "KeyNet": KeyNet, "MaxAffineNet": MaxAffineNet}


def load_model(path: str | os.PathLike | bytes, *, keys=None) -> _LearnedMIPS:
    """Read a model written by ``save`` (a path) or ``to_bytes`` (bytes), in eval mode on the CPU.

    With ``keys``, a model trained for another key set is refused (ValueError); so is a corrupt,
    foreign or newer file.
    """
    source = io.BytesIO(path) if isinstance(path, (bytes, bytearray)) else path
    if isinstance(path, (bytes, bytearray)):
        path = f"a {len(path)}-byte model"  # named so in the errors below
    try:
        _check_crcs(source)
        blob = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises many types for a damaged or foreign file
        first_line = next(iter(str(e).splitlines()), "")
        raise ValueError(
            f"{path} is not a readable amips_plugins model ({type(e).__name__}: {first_line})"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise ValueError(f"{path} is not an amips_plugins model")
    if blob.get("version") != _VERSION:
        raise ValueError(
            f"{path} has model format version {blob.get('version')}, this release reads {_VERSION}"
        )
    if blob.get("class") not in _CLASSES:
        raise ValueError(f"{path} holds an unknown model class {blob.get('class')!r}")
    if keys is not None and blob.get("key_fingerprint") != (expected := key_fingerprint(keys)):
        raise ValueError(
            f"{path} was trained for keys {blob.get('key_fingerprint')}, not for these {expected}"
        )
    model = _restore(_CLASSES[blob["class"]], blob.get("config"), blob.get("state_dict"), path)
    model.key_fingerprint = blob.get("key_fingerprint")
    return model.eval()


def _check_crcs(source) -> None:
    """Every member of the zip that ``torch.save`` wrote read whole against its CRC-32, which
    ``torch.load`` does not check: a flipped byte in the weights would load as other weights."""
    with zipfile.ZipFile(source) as z:
        damaged = z.testzip()
    if damaged is not None:
        raise ValueError(f"member {damaged} does not match its CRC-32")
    if isinstance(source, io.BytesIO):
        source.seek(0)


def _restore(cls, config, state, path) -> _LearnedMIPS:
    """``cls(**config)`` with the weights ``state``: built on the meta device first, so that a
    config that does not match its weights (or asks for more memory than they hold) is refused
    before anything is allocated; weights must be finite."""
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ValueError(f"{path} has no model config and weights")
    try:
        with torch.device("meta"):
            model = cls(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path} has an invalid {cls.__name__} config {config}: {e}") from None
    expected = {name: (t.shape, t.dtype) for name, t in model.state_dict().items()}
    found = {name: (t.shape, t.dtype) for name, t in state.items() if isinstance(t, torch.Tensor)}
    if expected != found:
        raise ValueError(f"{path}: the weights do not fit the config {config}")
    if not all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point()):
        raise ValueError(f"{path} has NaN or Inf weights")
    model.load_state_dict(state, assign=True)
    return model
