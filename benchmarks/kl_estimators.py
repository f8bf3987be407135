"""Which KL penalty follows the paper's reverse KL best: k1 in the reward or k2 in the loss.

A two-token autoregressive categorical policy pi and reference ref (V outcomes per token), so every
sequence can be enumerated: the exact gradient of the sequence-level KL(pi || ref) (the paper's
penalty on an attempt), the expected gradient of each estimator/placement (bias), and the spread of
its single-sample and RLOO (4 samples) estimates (variance), by Monte Carlo. Prints JSON.

    python benchmarks/kl_estimators.py [--vocab 6] [--draws 20000] [--scale 1.0]
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab", type=int, default=6)
    parser.add_argument("--draws", type=int, default=20000)
    parser.add_argument("--scale", type=float, default=1.0, help="how far pi is from ref (logit noise)")
    args = parser.parse_args()
    v = args.vocab
    rng = np.random.default_rng(0)
    ref = {"t1": jnp.asarray(rng.normal(size=v)), "t2": jnp.asarray(rng.normal(size=(v, v)))}
    theta = jax.tree.map(lambda x: x + args.scale * jnp.asarray(rng.normal(size=x.shape)), ref)
    x1, x2 = np.meshgrid(np.arange(v), np.arange(v), indexing="ij")
    x1, x2 = x1.ravel(), x2.ravel()  # all V^2 sequences

    def token_logps(params):  # [V^2, 2]: log-prob of each token of each sequence
        l1 = jax.nn.log_softmax(params["t1"])[x1]
        l2 = jax.nn.log_softmax(params["t2"], axis=-1)[x1, x2]
        return jnp.stack([l1, l2], axis=1)

    ref_lp = token_logps(ref)

    def flat(g):
        return np.concatenate([np.ravel(g["t1"]), np.ravel(g["t2"])])

    p = np.exp(np.asarray(token_logps(theta)).sum(1))
    exact = flat(jax.grad(lambda t: jnp.sum(jnp.exp(token_logps(t).sum(1)) * (token_logps(t) - ref_lp).sum(1)))(theta))

    # Per-sequence gradient contributions [V^2, P] of each placement (no gradient through sampling).
    def grads(fn):
        jac = jax.jacrev(fn)(theta)  # leaves [V^2, ...]
        return np.concatenate([np.asarray(jac["t1"]).reshape(v * v, -1), np.asarray(jac["t2"]).reshape(v * v, -1)], 1)

    lp = np.asarray(token_logps(theta))
    k1_seq = (lp - np.asarray(ref_lp)).sum(1)  # [V^2] summed k1 of each sequence
    score = grads(lambda t: token_logps(t).sum(1))  # grad log pi(seq)
    k2_grad = grads(lambda t: 0.5 * jnp.square(token_logps(t) - ref_lp).sum(1))
    k3_grad = grads(lambda t: (jnp.exp(ref_lp - token_logps(t)) - 1 - (ref_lp - token_logps(t))).sum(1))
    placements = {"k1_in_reward": k1_seq[:, None] * score, "k2_in_loss": k2_grad, "k3_in_loss": k3_grad}

    out = {"vocab": v, "exact_reverse_kl": float(np.sum(p * k1_seq)), "grad_norm_exact": float(np.linalg.norm(exact))}
    draws = rng.choice(v * v, size=(args.draws, 4), p=p / p.sum())
    for name, g in placements.items():
        mean = (p[:, None] * g).sum(0)
        single = g[draws[:, 0]]
        entry = {
            "relative_bias": float(np.linalg.norm(mean - exact) / np.linalg.norm(exact)),
            "single_sample_variance": float(((single - mean) ** 2).sum(1).mean() / np.linalg.norm(exact) ** 2),
        }
        if name == "k1_in_reward":  # RLOO: each sample's k1 minus the mean of the other three
            k = k1_seq[draws]
            loo = k - (k.sum(1, keepdims=True) - k) / 3
            est = (loo[..., None] * score[draws]).mean(1)
            entry["rloo4_variance"] = float(((est - mean) ** 2).sum(1).mean() / np.linalg.norm(exact) ** 2)
        else:
            est = g[draws].mean(1)
            entry["mean_of_4_variance"] = float(((est - mean) ** 2).sum(1).mean() / np.linalg.norm(exact) ** 2)
        out[name] = entry
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
