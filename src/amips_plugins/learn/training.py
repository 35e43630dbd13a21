"""Targets and training for the learned support functions.

Targets are the exact argmax keys and max scores (per cluster when ``offsets`` is given), from the
C++ core. ``fit_max_affine`` builds a MaxAffineNet from them in one pass. ``fit`` trains a
SupportNet or KeyNet (or fine-tunes a MaxAffineNet) on them: key matching mean ||k^ - k*||^2 / d and
score regression (f^ - s*)^2, AdamW with warm-up and cosine decay, gradient clipping, an EMA of the
weights (the EMA model is evaluated, kept and returned), early stopping on the validation loss.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .._progress import Progress, ProgressArg
from .._validation import as_matrix, as_num_threads, as_positive_int
from ..exact import topk_dot
from ..ground_truth import ground_truth, segment_ground_truth
from ..routing import most_winning_keys
from .models import MaxAffineNet, key_fingerprint

logger = logging.getLogger(__name__)

__all__ = [
    "Targets",
    "compute_targets",
    "augment_queries",
    "key_recovery",
    "relative_key_error",
    "routing_accuracy",
    "fit",
    "fit_max_affine",
]


@dataclass(frozen=True)
class Targets:
    """Exact answers for a set of queries: ids and scores, (n,) or (n, C) per cluster."""

    ids: np.ndarray
    scores: np.ndarray


def compute_targets(
    keys, queries, *, offsets=None, cache_dir=None, num_threads=None, progress: ProgressArg = False
) -> Targets:
    """Exact argmax key ids and max scores of every query, per cluster when ``offsets`` is given.

    Cached under ``cache_dir`` by a hash of the inputs when given.
    """
    if offsets is None:
        scores, ids = ground_truth(
            keys, queries, 1, cache_dir=cache_dir, num_threads=num_threads, progress=progress
        )
        return Targets(ids[:, 0], scores[:, 0])
    scores, ids = segment_ground_truth(
        keys, queries, offsets, cache_dir=cache_dir, num_threads=num_threads, progress=progress
    )
    return Targets(ids, scores)


def augment_queries(queries, copies: int, noise: float, seed: int = 0) -> np.ndarray:
    """The queries followed by ``copies`` noisy copies of each: q + noise * ||q|| * N(0, I).

    Targets must be computed for the noisy queries themselves, never copied from their source.
    """
    q = as_matrix(queries, "queries")
    if copies < 0 or noise < 0:
        raise ValueError(f"copies and noise must be >= 0, got {copies} and {noise}")
    rng = np.random.default_rng(seed)
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    noisy = [
        q + noise * norms * rng.standard_normal(q.shape, dtype=np.float32) for _ in range(copies)
    ]
    return np.concatenate([q, *noisy]).astype(np.float32)


def key_recovery(pred_keys, keys, true_ids, *, num_threads=None) -> float:
    """Fraction of predicted keys whose L2-nearest key is the exact argmax.

    argmin ||k^ - x||^2 = argmax <[k^, 1], [x, -||x||^2 / 2]>, so the core's exact search serves.
    """
    p = as_matrix(pred_keys, "pred_keys")
    x = as_matrix(keys, "keys", dim=p.shape[1])
    half_sq = -0.5 * np.einsum("nd,nd->n", x, x, dtype=np.float64)[:, None]
    _, nearest = topk_dot(
        np.hstack([p, np.ones((len(p), 1), np.float32)]),
        np.hstack([x, half_sq.astype(np.float32)]),
        1,
        num_threads=num_threads,
    )
    return float((nearest[:, 0] == np.asarray(true_ids)).mean())


def relative_key_error(pred_keys, queries, keys, true_ids) -> float:
    """Mean ||k^ - k*||^2 / ||q - k*||^2: 1.0 for k^ = q, 0.0 for the exact key."""
    best = np.asarray(keys)[np.asarray(true_ids)]
    num = ((np.asarray(pred_keys) - best) ** 2).sum(axis=1)
    den = ((np.asarray(queries) - best) ** 2).sum(axis=1)
    return float(np.mean(num / np.maximum(den, 1e-30)))


def routing_accuracy(pred_scores, true_scores, top: int = 1) -> float:
    """Fraction of queries whose truly best cluster is among the ``top`` clusters ranked by
    ``pred_scores`` (n, C)."""
    pred, true = np.asarray(pred_scores), np.asarray(true_scores)
    best = true.argmax(axis=1)
    ranked = np.argsort(-pred, axis=1)[:, :top]
    return float((ranked == best[:, None]).any(axis=1).mean())


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this torch has no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CPU or CUDA device, got {device!r}")
    return dev


def _check_settings(model, steps, batch_size, eval_every, patience, lr) -> None:
    if not hasattr(model, "key_multiply_adds") or not isinstance(model, torch.nn.Module):
        raise TypeError(f"fit trains a SupportNet or KeyNet, got {type(model).__name__}")
    for name, value in (
        ("steps", steps),
        ("batch_size", batch_size),
        ("eval_every", eval_every),
        ("patience", patience),
    ):
        as_positive_int(value, name)
    if not (isinstance(lr, (int, float)) and 0 < lr < 1e3 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number below 1000, got {lr!r}")


class _Batches:
    """Tensors for a query set and its targets, on the training device."""

    def __init__(self, queries: np.ndarray, targets: Targets, keys: torch.Tensor, device):
        self.q = torch.from_numpy(queries).to(device)
        ids = torch.from_numpy(np.asarray(targets.ids)).to(device)
        self.valid = ids >= 0  # empty clusters have no target
        # Target keys are gathered per batch: (n, C, d) at once would not fit for many clusters.
        self.keys, self.key_ids = keys, ids.clamp_min(0)
        self.score = torch.from_numpy(np.asarray(targets.scores)).to(device)
        if self.score.ndim == 1:
            self.score, self.valid = self.score[:, None], self.valid[:, None]
        self.score = torch.where(self.valid, self.score, torch.zeros_like(self.score))

    def __len__(self):
        return len(self.q)


def _loss(model, batch: _Batches, idx, key_weight: float, score_weight: float) -> torch.Tensor:
    q, valid = batch.q[idx], batch.valid[idx]
    loss = q.new_zeros(())
    if score_weight:
        err = (model.score(q) - batch.score[idx]) ** 2
        loss = loss + score_weight * err[valid].mean()
    if key_weight:
        k_hat = model.key(q)
        sq = ((k_hat - batch.keys[batch.key_ids[idx]]) ** 2).sum(-1) / model.dim
        loss = loss + key_weight * (sq[valid.squeeze(1)] if sq.ndim == 1 else sq[valid]).mean()
    return loss


@torch.no_grad()
def _evaluate(
    model,
    batch: _Batches,
    keys_np: np.ndarray,
    targets: Targets,
    key_weight,
    score_weight,
    threads: int,
) -> dict:
    losses, keys_out, scores_out = [], [], []
    for idx in torch.arange(len(batch), device=batch.q.device).split(4096):
        losses.append(float(_loss(model, batch, idx, key_weight, score_weight)) * len(idx))
        if model.num_outputs == 1:
            keys_out.append(model.key(batch.q[idx]).cpu().numpy())
        else:
            scores_out.append(model.score(batch.q[idx]).cpu().numpy())
    metrics = {"val_loss": sum(losses) / len(batch)}
    queries = batch.q.cpu().numpy()
    if model.num_outputs == 1:
        pred = np.concatenate(keys_out)
        metrics["key_recovery"] = key_recovery(pred, keys_np, targets.ids, num_threads=threads)
        metrics["relative_error"] = relative_key_error(pred, queries, keys_np, targets.ids)
    else:
        pred = np.concatenate(scores_out)
        true = np.where(np.asarray(targets.ids) >= 0, targets.scores, -np.inf)
        metrics["routing_top1"] = routing_accuracy(pred, true, 1)
        metrics["routing_top5pct"] = routing_accuracy(
            pred, true, max(1, round(0.05 * model.num_outputs))
        )
    return metrics


def fit(
    model,
    keys,
    queries,
    *,
    offsets=None,
    val_queries=None,
    val_fraction: float = 0.1,
    steps: int = 2000,
    batch_size: int = 512,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    warmup: int = 100,
    key_weight: float = 1.0,
    score_weight: float = 0.01,
    ema_decay: float = 0.99,
    clip: float = 1.0,
    augment_copies: int = 0,
    noise: float = 0.02,
    eval_every: int = 200,
    patience: int = 5,
    time_budget: float | None = None,
    device: str = "auto",
    seed: int = 0,
    cache_dir=None,
    num_threads=None,
    progress: ProgressArg = False,
) -> list[dict]:
    """Train ``model`` (SupportNet or KeyNet) to predict the best keys of ``keys`` for ``queries``.

    Validation queries are ``val_queries``, or a seeded ``val_fraction`` of the *source* queries
    held out before augmentation (no noisy copy of a validation query is trained on). Every
    ``eval_every`` steps the EMA model is scored on them (validation loss; key recovery and
    relative error for one output; routing accuracy for several); training stops after
    ``patience`` evaluations without a better validation loss, after ``time_budget`` seconds of
    training (targets excluded), or on Ctrl-C. The model ends with the best EMA weights, in eval
    mode. The learning-rate schedule spans ``steps``; with a time budget, set ``steps`` to about
    what fits in it.

    ``progress``: True for a tqdm bar of the steps, or a callable(done, total).

    Returns the history: one dict per evaluation (step, seconds, train loss, validation metrics),
    the last one holding ``stopped`` ("steps", "early", "time", "interrupted"). If the loss
    stops being finite, FloatingPointError is raised after the model is left, as on any other
    stop, with its best EMA weights in eval mode.
    """
    _check_settings(model, steps, batch_size, eval_every, patience, lr)
    threads = as_num_threads(num_threads)
    x = as_matrix(keys, "keys", dim=model.dim, allow_empty=False)
    q = as_matrix(queries, "queries", dim=model.dim, allow_empty=False)
    if val_queries is None:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        perm = np.random.default_rng(seed).permutation(len(q))
        num_val = max(1, round(val_fraction * len(q)))
        q, val_q = q[np.sort(perm[num_val:])], q[np.sort(perm[:num_val])]
    else:
        val_q = as_matrix(val_queries, "val_queries", dim=model.dim, allow_empty=False)
    if len(q) == 0:
        raise ValueError("no training queries left after holding out the validation set")
    q = augment_queries(q, augment_copies, noise, seed) if augment_copies else q
    if offsets is not None and len(offsets) - 1 != model.num_outputs:
        raise ValueError(
            f"{len(offsets) - 1} clusters in offsets, but the model has {model.num_outputs} outputs"
        )

    dev = _device(device)
    torch.manual_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    keys_t = torch.from_numpy(x).to(dev)
    train_targets = compute_targets(x, q, offsets=offsets, cache_dir=cache_dir, num_threads=threads)
    val_targets = compute_targets(
        x, val_q, offsets=offsets, cache_dir=cache_dir, num_threads=threads
    )
    train, val = _Batches(q, train_targets, keys_t, dev), _Batches(val_q, val_targets, keys_t, dev)

    model.to(dev).train()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / max(1, warmup))
            * 0.5
            * (1 + math.cos(math.pi * min(s, steps) / steps))
        ),
    )
    history, best, best_state, since_best, running = (
        [],
        math.inf,
        copy.deepcopy(ema.state_dict()),
        0,
        None,
    )
    stopped, start = "steps", time.perf_counter()
    bar = Progress(progress, steps, f"train {type(model).__name__}", unit="step")
    try:
        for step in range(steps):
            idx = torch.randint(len(train), (min(batch_size, len(train)),), generator=gen).to(dev)
            loss = _loss(model, train, idx, key_weight, score_weight)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training diverged with lr={lr:g}: the loss became {loss.item()} at step "
                    f"{step + 1} of {steps}; try a smaller lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(pm, 1 - ema_decay)
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update()
            out_of_time = time_budget is not None and time.perf_counter() - start > time_budget
            if (step + 1) % eval_every == 0 or step + 1 == steps or out_of_time:
                row = {
                    "step": step + 1,
                    "seconds": time.perf_counter() - start,
                    "loss": running,
                    **_evaluate(ema, val, x, val_targets, key_weight, score_weight, threads),
                }
                history.append(row)
                bar.show({k: v for k, v in row.items() if k != "step"})
                if row["val_loss"] < best:
                    best, best_state, since_best = (
                        row["val_loss"],
                        copy.deepcopy(ema.state_dict()),
                        0,
                    )
                else:
                    since_best += 1
                    if since_best >= patience:
                        stopped = "early"
                        break
                if out_of_time:
                    stopped = "time"
                    break
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        bar.close()
        # Also when the loss diverged: the model keeps the best weights seen, not the diverged.
        model.load_state_dict(best_state)
        model.eval()
    logger.info(
        "%s training stopped (%s) after %s steps; best validation loss %.4g",
        type(model).__name__,
        stopped,
        history[-1]["step"] if history else 0,
        best,
    )
    model.key_fingerprint = key_fingerprint(x)
    if history:
        history[-1]["stopped"] = stopped
    else:
        history.append({"step": 0, "stopped": stopped})
    return history


def fit_max_affine(
    keys,
    queries,
    num_pieces: int,
    *,
    temperatures=(0.0, 0.005, 0.01, 0.015, 0.02, 0.03),
    val_fraction: float = 0.1,
    seed: int = 0,
    num_threads=None,
) -> MaxAffineNet:
    """A MaxAffineNet for ``keys``: its pieces are the ``num_pieces`` keys that are the exact top-1
    of the most ``queries``; its temperature is the one of ``temperatures`` with the least
    relative key error on a seeded ``val_fraction`` of the queries, scored with pieces picked
    from the other queries. The returned model's pieces come from all the queries.
    ``temperatures=(0.0,)`` keeps the best piece itself (the most keys recovered)."""
    threads = as_num_threads(num_threads)
    x = as_matrix(keys, "keys", allow_empty=False)
    q = as_matrix(queries, "queries", dim=x.shape[1], allow_empty=False)
    if not 0.0 < val_fraction < 1.0 or len(q) < 2:
        raise ValueError(
            f"need val_fraction in (0, 1) and at least 2 queries, got {val_fraction}, {len(q)}"
        )
    held_out = np.zeros(len(q), bool)
    held_out[
        np.random.default_rng(seed).permutation(len(q))[: max(1, round(val_fraction * len(q)))]
    ] = True
    best = topk_dot(q, x, 1, num_threads=threads)[1][:, 0]  # one exact pass serves both pickings
    val_q, val_best = q[held_out], best[held_out]

    def model(ids, temperature):
        net = MaxAffineNet(x.shape[1], len(ids), temperature)
        net.pieces.data.copy_(torch.from_numpy(x[ids]))
        net.key_fingerprint = key_fingerprint(x)
        return net.eval()

    def val_error(net):
        with torch.no_grad():
            pred = torch.cat([net.key(b) for b in torch.from_numpy(val_q).split(4096)]).numpy()
        return relative_key_error(pred, val_q, x, val_best)

    ids = most_winning_keys(x, best[~held_out], num_pieces)
    temperature = min(temperatures, key=lambda t: val_error(model(ids, t)))
    return model(most_winning_keys(x, best, num_pieces), temperature)
