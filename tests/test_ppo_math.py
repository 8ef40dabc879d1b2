"""zorkppo.ppo against numbers worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from zorkppo import ppo

NEG_INF = float("-inf")


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def close(actual: torch.Tensor, expected: torch.Tensor | list[float], tol: float = 1e-6) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=tol)


# --- GAE -------------------------------------------------------------------------------


def test_gae_single_episode_terminal() -> None:
    # gamma = lam = 0.5, so gamma * lam = 0.25. Episode ends after turn 2: last_value ignored.
    # t=2: delta = 2 - 1.5                 = 0.5    A2 = 0.5
    # t=1: delta = 0 + 0.5*1.5 - 1.0       = -0.25  A1 = -0.25 + 0.25*0.5     = -0.125
    # t=0: delta = 1 + 0.5*1.0 - 0.5       = 1.0    A0 = 1.0 + 0.25*(-0.125)  = 0.96875
    # returns = A + V = [1.46875, 0.875, 2.0]
    adv, ret = ppo.gae(t(1, 0, 2), t(0.5, 1.0, 1.5), t(0, 0, 1), 10.0, gamma=0.5, lam=0.5)
    close(adv, [0.96875, -0.125, 0.5])
    close(ret, [1.46875, 0.875, 2.0])


def test_gae_two_episodes_in_one_rollout() -> None:
    # Episode A = turns 0-1 (done after turn 1), episode B = turns 2-3, cut off, bootstrap 4.
    # t=3: delta = 4 + 0.5*4 - 2 = 4        A3 = 4
    # t=2: delta = 3 + 0.5*2 - 1 = 3        A2 = 3 + 0.25*4 = 4
    # t=1: done, delta = 2 - 1   = 1        A1 = 1   (nothing from episode B leaks in)
    # t=0: delta = 1 + 0.5*1 - 0.5 = 1      A0 = 1 + 0.25*1 = 1.25
    # returns = [1.75, 2, 5, 6]
    adv, ret = ppo.gae(t(1, 2, 3, 4), t(0.5, 1, 1, 2), t(0, 1, 0, 0), 4.0, gamma=0.5, lam=0.5)
    close(adv, [1.25, 1.0, 4.0, 4.0])
    close(ret, [1.75, 2.0, 5.0, 6.0])


def test_gae_bootstraps_only_when_not_done() -> None:
    # Not done: delta = 1 + 0.5*3 - 2 = 0.5.   Done: delta = 1 - 2 = -1.
    adv, _ = ppo.gae(t(1), t(2), t(0), 3.0, gamma=0.5, lam=0.5)
    close(adv, [0.5])
    adv, _ = ppo.gae(t(1), t(2), t(1), 3.0, gamma=0.5, lam=0.5)
    close(adv, [-1.0])
    # A tensor last_value works the same.
    adv, _ = ppo.gae(t(1), t(2), t(0), torch.tensor(3.0), gamma=0.5, lam=0.5)
    close(adv, [0.5])


def test_gae_defaults() -> None:
    # gamma 0.99, lam 0.95, zero values: A1 = 1, A0 = 1 + 0.99*0.95*1 = 1.9405
    adv, ret = ppo.gae(t(1, 1), t(0, 0), t(0, 1), 0.0)
    close(adv, [1.9405, 1.0])
    close(ret, [1.9405, 1.0])


# --- normalize and schedules ---------------------------------------------------------------


def test_normalize() -> None:
    # mean 2.5; population var = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25; std = 1.1180340
    # -> [-1.5, -0.5, 0.5, 1.5] / 1.1180340 = [-1.341641, -0.447214, 0.447214, 1.341641]
    out = ppo.normalize(t(1, 2, 3, 4))
    close(out, [-1.341641, -0.447214, 0.447214, 1.341641])
    close(ppo.normalize(t(7.0)), [0.0])
    # moments of a larger set (other replicas' values): its mean and std, not x's own
    close(ppo.normalize(t(1.0, 3.0), moments=(2.0, 0.5, 4)), [-2.0, 2.0])
    close(ppo.normalize(t(5.0), moments=(5.0, 0.0, 1)), [0.0])
    # not centred: [0, 0, 2, 4] / std 1.6583124 (mean 1.5, var (2.25+2.25+0.25+6.25)/4 = 2.75);
    # the zero-advantage turns stay at 0 instead of being pushed down to -0.904534
    close(ppo.normalize(t(0, 0, 2, 4), center=False), [0.0, 0.0, 1.206045, 2.412091])
    close(ppo.normalize(t(1.0, 3.0), moments=(2.0, 0.5, 4), center=False), [2.0, 6.0])


def test_same_state_advantages() -> None:
    # Three games, two turns; states a, b, c. Returns:
    #   turn 0: a 4 (game 0), a 1 (game 1), b 7 (game 2)
    #   turn 1: a 2 (game 0), c 5 (game 1), b 3 (game 2)
    # Game 0's two turns in a see only game 1's a (1): 4 - 1 = 3 and 2 - 1 = 1.
    # Game 1's a sees game 0's a turns (4 and 2, mean 3): 1 - 3 = -2.
    # Game 2's b turns have no other game in b, nor has game 1's c: the fallback stays.
    returns = torch.tensor([[4.0, 1.0, 7.0], [2.0, 5.0, 3.0]], dtype=torch.float64)
    states = [["a", "a", "b"], ["a", "c", "b"]]
    fallback = torch.tensor([[0.5, 0.6, 0.7], [0.8, 0.9, 1.0]], dtype=torch.float64)
    close(
        ppo.same_state_advantages(returns, states, fallback),
        [[3.0, -2.0, 0.7], [1.0, 0.9, 1.0]],
    )
    # The fallback itself is left as it was.
    close(fallback, [[0.5, 0.6, 0.7], [0.8, 0.9, 1.0]])


def test_clip_schedule() -> None:
    # max(0.1, 0.2 * (1 - s/1e5)): 0.2, 0.1, max(0.1, 0) and max(0.1, -0.2)
    assert ppo.clip_range(0) == pytest.approx(0.2)
    assert ppo.clip_range(5e4) == pytest.approx(0.1)
    assert ppo.clip_range(1e5) == pytest.approx(0.1)
    assert ppo.clip_range(2e5) == pytest.approx(0.1)
    # Above the floor it is linear: 0.2 * (1 - 0.25) = 0.15
    assert ppo.clip_range(2.5e4) == pytest.approx(0.15)


def test_entropy_decay() -> None:
    # 0.01 * (1 - s/1e5): 0.01, 0.005, 0, then clamped at the floor.
    assert ppo.entropy_coef(0) == pytest.approx(0.01)
    assert ppo.entropy_coef(5e4) == pytest.approx(0.005)
    assert ppo.entropy_coef(1e5) == pytest.approx(0.0)
    assert ppo.entropy_coef(2e5) == pytest.approx(0.0)
    assert ppo.entropy_coef(2e5, floor=0.001) == pytest.approx(0.001)


# --- losses ----------------------------------------------------------------------------


def test_policy_loss_unclipped() -> None:
    # ratios 1.1 and 0.9 are inside [0.8, 1.2]; advantages +1, -1.
    # losses -1*1.1 = -1.1 and +1*0.9 = 0.9 -> mean -0.1; clip fraction 0
    # k3: (0.1 - ln 1.1) = 0.0046898, (-0.1 - ln 0.9) = 0.0053605 -> mean 0.0050252
    new = torch.log(t(1.1, 0.9))
    loss, clip_frac, kl = ppo.policy_loss(new, t(0, 0), t(1, -1), clip=0.2)
    close(loss, torch.tensor(-0.1))
    close(clip_frac, torch.tensor(0.0))
    close(kl, torch.tensor(0.0050252))


def test_policy_loss_clipped() -> None:
    # clip 0.2, ratios [1.5, 0.5, 1.0, 0.5], advantages [2, 2, -1, -1]:
    # s0: max(-2*1.5, -2*1.2) = max(-3, -2.4)   = -2.4  (gain past 1.2 is not paid)
    # s1: max(-2*0.5, -2*0.8) = max(-1, -1.6)   = -1.0  (a move the wrong way still costs)
    # s2: ratio 1, -(-1)*1                       =  1.0
    # s3: max(1*0.5, 1*0.8)                      =  0.8
    # mean = (-2.4 - 1 + 1 + 0.8) / 4 = -0.4; clipped ratios: 1.5, 0.5, 0.5 -> 3/4
    # k3: 1.5 -> 0.5 - 0.4054651 = 0.0945349; 0.5 -> -0.5 + 0.6931472 = 0.1931472 (x2); 1 -> 0
    #     mean = (0.0945349 + 2*0.1931472) / 4 = 0.1202073
    new = torch.log(t(1.5, 0.5, 1.0, 0.5)).requires_grad_()
    loss, clip_frac, kl = ppo.policy_loss(new, t(0, 0, 0, 0), t(2, 2, -1, -1), clip=0.2)
    close(loss.detach(), torch.tensor(-0.4))
    close(clip_frac, torch.tensor(0.75))
    close(kl, torch.tensor(0.1202073))
    loss.backward()
    # The clipped term of s0 has no gradient; s1 does: d/dlogp (-2 * r) / 4 = -2*0.5/4 = -0.25
    close(new.grad, [0.0, -0.25, 0.25, 0.0])


def test_value_loss_clipped_picks_max() -> None:
    # clip 0.2, v_old 1 everywhere.
    # s0: v 1.5, R 2: unclipped 0.25; clipped v 1.2 -> 0.64; max 0.64 (clipped wins)
    # s1: v 1.1, R 0: inside the clip, both 1.21
    # s2: v 1.5, R 0: unclipped 2.25; clipped v 1.2 -> 1.44; max 2.25 (unclipped wins)
    # 0.5 * (0.64 + 1.21 + 2.25) / 3 = 0.5 * 4.1 / 3 = 0.6833333
    loss = ppo.value_loss(t(1.5, 1.1, 1.5), t(1, 1, 1), t(2, 0, 0), clip=0.2)
    close(loss, torch.tensor(0.6833333))


def test_masked_mean() -> None:
    # (1 + 3) / 2 = 2; the masked -inf must not poison the sum.
    close(ppo.masked_mean(t(1, NEG_INF, 3, 4), t(1, 0, 1, 0)), torch.tensor(2.0))
    mask = torch.tensor([True, False, True, False])
    close(ppo.masked_mean(t(1, 2, 3, 4), mask), torch.tensor(2.0))
    close(ppo.masked_mean(t(1, 2), t(0, 0)), torch.tensor(0.0))
    # Per row: [1, 2] -> 1.5; [3, x] -> 3
    rows = torch.tensor([[1.0, 2.0], [3.0, 9.0]])
    close(ppo.masked_mean(rows, torch.tensor([[1, 1], [1, 0]]), dim=-1), [1.5, 3.0])


# --- adaptive KL -------------------------------------------------------------------------


def test_kl_controller_up_down_steady_and_round_trip() -> None:
    ctl = ppo.AdaptiveKLController()
    assert ctl.update(0.05) == pytest.approx(0.3)  # 0.05 > 0.03: 0.2 * 1.5
    assert ctl.update(0.005) == pytest.approx(0.24)  # 0.005 < 0.01: 0.3 * 0.8
    assert ctl.update(0.02) == pytest.approx(0.24)  # inside the band
    assert ctl.update(0.03) == pytest.approx(0.24)  # the band's edges count as inside
    assert ctl.update(0.01) == pytest.approx(0.24)
    assert ctl.update(torch.tensor(0.02)) == pytest.approx(0.24)  # a tensor KL works too
    state = ctl.state_dict()
    fresh = ppo.AdaptiveKLController()
    fresh.load_state_dict(state)
    assert fresh == ctl
    assert fresh.coef == pytest.approx(0.24)
    with pytest.raises(KeyError):
        fresh.load_state_dict({"bogus": 1.0})


# --- distributions -----------------------------------------------------------------------


def test_js_zero_for_equal_and_symmetric() -> None:
    logp = torch.log_softmax(torch.tensor([[0.3, -1.0, 2.0], [1.0, 1.0, 1.0]]), -1)
    logq = torch.log_softmax(torch.tensor([[1.0, 0.0, -2.0], [0.0, 5.0, 1.0]]), -1)
    close(ppo.js_divergence(logp, logp), [0.0, 0.0])
    torch.testing.assert_close(ppo.js_divergence(logp, logq), ppo.js_divergence(logq, logp))


def test_js_hand_values_and_bound() -> None:
    # p = [0.8, 0.2], q = [0.2, 0.8], m = [0.5, 0.5]
    # KL(p||m) = 0.8 ln 1.6 + 0.2 ln 0.4 = 0.3760029 - 0.1832581 = 0.1927448 = KL(q||m)
    logp = torch.log(t(0.8, 0.2))
    logq = torch.log(t(0.2, 0.8))
    close(ppo.js_divergence(logp, logq), torch.tensor(0.1927448))
    # Disjoint supports reach the bound ln 2 = 0.6931472 exactly.
    one_hot_a = torch.log(t(1.0, 0.0))
    one_hot_b = torch.log(t(0.0, 1.0))
    close(ppo.js_divergence(one_hot_a, one_hot_b), torch.tensor(math.log(2)))
    random = torch.log_softmax(torch.randn(64, 5, generator=torch.Generator().manual_seed(0)), -1)
    js = ppo.js_divergence(random, random.flip(0))
    assert bool(((js >= 0) & (js <= math.log(2) + 1e-9)).all())


def test_js_finite_with_masked_entries() -> None:
    # p = [0.5, 0.5, -], q = [1, 0, -] (slot 2 masked in both, slot 1 only in q); m = [0.75, 0.25]
    # KL(p||m) = 0.5 ln(2/3) + 0.5 ln 2 = 0.5 ln(4/3);  KL(q||m) = ln(4/3)
    # JS = 0.5 * 0.5 ln(4/3) + 0.5 ln(4/3) = 0.75 ln(4/3) = 0.2157616
    logp = torch.tensor([math.log(0.5), math.log(0.5), NEG_INF], requires_grad=True)
    logq = torch.tensor([0.0, NEG_INF, NEG_INF], requires_grad=True)
    js = ppo.js_divergence(logp, logq)
    close(js.detach(), torch.tensor(0.75 * math.log(4 / 3), dtype=torch.float32))
    js.backward()
    assert bool(torch.isfinite(logp.grad).all()) and bool(torch.isfinite(logq.grad).all())


def test_candidate_softmax_ignores_masked() -> None:
    # Valid scores [-1, -2]: p = 1/(1 + e^-1) = 0.7310586, e^-1/(1 + e^-1) = 0.2689414
    scores = torch.tensor([[-1.0, -2.0, 5.0], [0.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    out = ppo.candidate_log_softmax(scores, mask)
    close(out[0, :2].exp().detach(), [0.7310586, 0.2689414], tol=1e-6)
    assert out[0, 2] == NEG_INF
    close(out[0].exp().sum().detach(), torch.tensor(1.0))
    # A row with nothing valid is all -inf, not NaN, and gradients stay finite.
    assert bool((out[1] == NEG_INF).all())
    out[0, :2].sum().backward()
    assert bool(torch.isfinite(scores.grad).all())
    assert scores.grad[0, 2] == 0.0


def test_sequence_logprob_masks_prompt() -> None:
    # Prompt tokens (mask 0) ignored, even a -inf one: -0.3 + -0.4 = -0.7; second row -0.5
    token_logprobs = torch.tensor([[NEG_INF, -0.2, -0.3, -0.4], [-0.1, -0.5, 0.0, 0.0]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0]])
    close(ppo.sequence_logprob(token_logprobs, mask), [-0.7, -0.5])


def test_entropy_uniform_is_ln_n() -> None:
    close(ppo.categorical_entropy(torch.log(torch.full((4,), 0.25))), torch.tensor(math.log(4)))
    # Masked slot contributes nothing: uniform over the 2 live ones -> ln 2
    logp = torch.tensor([math.log(0.5), math.log(0.5), NEG_INF])
    close(ppo.categorical_entropy(logp), torch.tensor(math.log(2)))


def test_explained_variance() -> None:
    returns = t(1, 2, 3)
    assert ppo.explained_variance(returns.clone(), returns) == pytest.approx(1.0)
    # Predicting the mean (2) explains nothing: Var[R - 2] = Var[R]
    assert ppo.explained_variance(t(2, 2, 2), returns) == pytest.approx(0.0)
    # R - v = [0, 0, 1]: Var = 1/3 - 1/9 = 2/9; Var[R] = 2/3 -> 1 - (2/9)/(2/3) = 2/3
    assert ppo.explained_variance(t(1, 2, 2), returns) == pytest.approx(2 / 3)
    # Constant returns: undefined ratio, reported as 0
    assert ppo.explained_variance(t(0, 1, 2), t(5, 5, 5)) == 0.0


def test_kl_k3_per_token_hand_values():
    from zorkppo.ppo import kl_k3_per_token

    # equal log-probs: r = 1 -> 1 - 0 - 1 = 0
    # policy log 0.5, ref log 0.25: log r = log 0.5 -> r - log r - 1 = 0.5 + 0.693147 - 1 = 0.193147
    got = kl_k3_per_token(torch.log(torch.tensor([0.3, 0.5])), torch.log(torch.tensor([0.3, 0.25])))
    assert torch.allclose(got, torch.tensor([0.0, 0.193147]), atol=1e-6)
