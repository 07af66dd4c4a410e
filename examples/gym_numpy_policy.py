"""Train a tiny slate policy through purerec's Gymnasium adapter with plain NumPy (no JAX code).

Run it from the repository root (about 20 s on 2 CPU cores, half of it building the world):

    python examples/gym_numpy_policy.py            # or: .venv/bin/python examples/gym_numpy_policy.py

It is the loop a PyTorch user writes for any Gymnasium vector env -- ``reset``, act, ``step``,
and nothing to do at the end of a session, because ``PurerecVectorEnv`` auto-resets a finished
session inside the same ``step`` (``AutoresetMode.SAME_STEP``): the observation it returns for
that session is already the first one of the next session. Gymnasium's ``RecordEpisodeStatistics``
wraps the adapter and reports each finished session in ``info["episode"]`` (return ``r``, length
``l``); purerec's own statistics (also the true return) are in ``info["purerec_episode"]``.

The policy scores every item with a linear model, ``score_i = theta_i + w . x_i``, where ``x_i`` is
read from the observation (the feedback item ``i`` got if it is in the window, and whether it is),
and draws a slate of K *distinct* items from the Plackett-Luce (sequential softmax) distribution
by the Gumbel top-K trick. It learns by REINFORCE on the discounted reward-to-go, cut at the end of
each session. Iteration 0 is the untrained policy: all scores 0, i.e. uniformly random slates.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

from purerec.config import Config, env_sections, world_sections, WorldConfig
from purerec.data.datasets import get_worlds
from purerec.gym_adapter import PurerecVectorEnv
from purerec.sim.env import make_params


def small_world_env(num_envs: int, seed: int) -> PurerecVectorEnv:
    """A 120-user x 150-item synthetic test world (the test suite's small world), built in seconds."""
    world = WorldConfig(n_users=300, n_items=400, n_test_users=120, n_test_items=150, n_tags=12,
                        true_dim=8, emb_dim=8, log_density=0.2)
    cfg = Config(world=world).validate()
    _, test_world = get_worlds(world_sections(cfg), use_cache=False)
    return PurerecVectorEnv(make_params(test_world, env_sections(cfg)), num_envs, seed=seed)


def item_features(obs: dict[str, np.ndarray], n_items: int) -> np.ndarray:
    """(B, I, 2): per item, its observed feedback in the window (0 if absent) and 1 if present."""
    b, w = obs["items"].shape
    x = np.zeros((b, n_items, 2))
    rows, items, valid = np.repeat(np.arange(b), w), obs["items"].ravel(), obs["valid"].ravel() == 1
    x[rows[valid], items[valid], 0] = obs["feedback"].ravel()[valid]
    x[rows[valid], items[valid], 1] = 1.0
    return x


def grad_log_prob(scores: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """d log P(slate) / d scores for Plackett-Luce: sum over positions of onehot(pick) - softmax(left)."""
    b = scores.shape[0]
    rows, left, grad = np.arange(b), np.ones(scores.shape, bool), np.zeros(scores.shape)
    for k in range(slates.shape[1]):
        z = np.where(left, scores, -np.inf)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        grad -= p / p.sum(axis=1, keepdims=True)
        grad[rows, slates[:, k]] += 1.0
        left[rows, slates[:, k]] = False
    return grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=64, help="steps per iteration (per session slot)")
    ap.add_argument("--lr", type=float, default=30.0)
    ap.add_argument("--gamma", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    env = gym.wrappers.vector.RecordEpisodeStatistics(small_world_env(args.num_envs, args.seed))
    n_items, k = env.unwrapped.n_items, env.unwrapped.slate_size
    print(f"{env.unwrapped} (world built in {time.perf_counter() - t0:.1f} s)")
    rng = np.random.default_rng(args.seed)
    theta, w = np.zeros(n_items), np.zeros(2)

    obs, _ = env.reset(seed=args.seed)
    history = []
    for it in range(args.iterations):
        grads_theta, grads_w, rewards, dones, ep_r, ep_l = [], [], [], [], [], []
        for _ in range(args.steps):
            x = item_features(obs, n_items)
            scores = theta + x @ w
            slates = np.argsort(-(scores + rng.gumbel(size=scores.shape)), axis=1)[:, :k]  # K distinct items
            g = grad_log_prob(scores, slates)
            obs, reward, terminated, truncated, info = env.step(slates)  # done sessions restart here
            grads_theta.append(g)
            grads_w.append(np.einsum("bi,bij->bj", g, x))
            rewards.append(reward)
            dones.append(terminated | truncated)
            if "episode" in info:  # RecordEpisodeStatistics: the sessions that just ended
                ended = info["_episode"]
                ep_r += info["episode"]["r"][ended].tolist()
                ep_l += info["episode"]["l"][ended].tolist()
        # Discounted reward-to-go, cut where a session ended (the next step belongs to a new user).
        ret, adv = np.zeros(args.num_envs), np.zeros((args.steps, args.num_envs))
        for t in reversed(range(args.steps)):
            ret = rewards[t] + args.gamma * ret * ~dones[t]
            adv[t] = ret
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        scale = args.lr / adv.size
        theta += scale * np.einsum("tb,tbi->i", adv, np.array(grads_theta))
        w += scale * np.einsum("tb,tbj->j", adv, np.array(grads_w))
        history.append((np.mean(ep_r), np.mean(ep_l)))
        print(f"iter {it:2d}  episodes {len(ep_r):3d}  mean return {np.mean(ep_r):6.2f}  "
              f"mean length {np.mean(ep_l):5.2f}  w after update = {np.round(w, 2)}")

    first, last = history[0], np.mean(history[-5:], axis=0)
    print(f"random policy (iter 0): return {first[0]:.2f}, length {first[1]:.2f};  "
          f"trained (last 5 iters): return {last[0]:.2f}, length {last[1]:.2f}  "
          f"[{time.perf_counter() - t0:.1f} s]")
    env.close()


if __name__ == "__main__":
    main()
