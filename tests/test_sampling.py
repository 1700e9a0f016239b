import math

import torch

from adaptive_teacher.envs import DeceptiveGrid
from adaptive_teacher.envs.base import concat_trajectories
from adaptive_teacher.policies import DiscretePolicy


def _check_valid(env, traj):
    """Every transition is allowed by the forward mask and leads where step() says."""
    for b in range(traj.batch_size):
        n = int(traj.lengths[b])
        for t in range(n):
            s, a = traj.states[b, t : t + 1], int(traj.actions[b, t])
            assert bool(env.forward_mask(s)[0, a])
            nxt = s if a == env.stop else env.step(s, torch.tensor([a]))
            assert torch.equal(nxt, traj.states[b, t + 1 : t + 2])
        assert int(traj.actions[b, n - 1]) == env.stop
        assert bool((traj.actions[b, n:] == -1).all())
        assert torch.equal(traj.terminal[b], traj.states[b, n])
    assert torch.equal(traj.states[:, 0], env.initial_states(traj.batch_size))


def test_forward_and_backward_rollouts_are_valid_trajectories():
    torch.manual_seed(0)
    env = DeceptiveGrid(3, 5)
    model = DiscretePolicy(env.n_features, env.n_actions, env.n_backward_actions, hidden=32)
    fwd = env.rollout(model, 64)
    _check_valid(env, fwd)
    bwd = env.backward_rollout(fwd.terminal)
    _check_valid(env, bwd)
    assert torch.equal(bwd.terminal, fwd.terminal)
    assert torch.equal(bwd.lengths, fwd.terminal.sum(-1) + 1)


def test_uniform_backward_log_prob_counts_parents():
    env = DeceptiveGrid(2, 4)
    x = torch.tensor([[1, 1], [0, 3], [2, 0]])
    model = DiscretePolicy(env.n_features, env.n_actions, env.n_backward_actions, hidden=8)
    traj = env.backward_rollout(x)
    lp = env.log_probs(model, traj)
    # (1,1): 2 parents then 1 parent -> log 1/2; (0,3): 1 parent each step; (2,0): 1 each step
    assert torch.allclose(lp.log_pb.sum(1), torch.tensor([-math.log(2), 0.0, 0.0]))


def test_eps_uniform_mixing_reaches_all_actions_with_a_peaked_policy():
    torch.manual_seed(0)
    env = DeceptiveGrid(2, 8)
    model = DiscretePolicy(env.n_features, env.n_actions, env.n_backward_actions, hidden=8)
    with torch.no_grad():
        model.net[-1].bias.copy_(torch.tensor([0.0, 0.0, 50.0]))  # always stop at once
        model.net[-1].weight.zero_()
    assert bool((env.rollout(model, 200).lengths == 1).all())
    assert bool((env.rollout(model, 200, eps=0.5).lengths > 1).any())


def test_learned_backward_policy_log_probs_normalised():
    torch.manual_seed(0)
    env = DeceptiveGrid(2, 5)
    model = DiscretePolicy(env.n_features, env.n_actions, env.n_backward_actions, hidden=16, learn_pb=True)
    traj = env.backward_rollout(torch.tensor([[2, 3]] * 2000), model)
    lp = env.log_probs(model, traj)
    # Σ over all trajectories to x of P_B(τ|x) = 1: check by the empirical mean of 1/P_B (importance identity)
    n_paths = math.comb(5, 2)
    est = torch.exp(-lp.log_pb.sum(1).double()).mean()
    assert abs(est.item() - n_paths) / n_paths < 0.1


def test_splice_and_concat():
    torch.manual_seed(0)
    env = DeceptiveGrid(2, 6)
    model = DiscretePolicy(env.n_features, env.n_actions, env.n_backward_actions, hidden=16)
    back = env.backward_rollout(torch.tensor([[3, 2], [0, 0], [5, 1]]))
    keep = torch.tensor([2, 0, 3])
    suffix = env.rollout(model, start=back.states[torch.arange(3), keep])
    joined = env.splice(back, keep, suffix)
    _check_valid(env, joined)
    assert torch.equal(joined.states[0, :3], back.states[0, :3])
    both = concat_trajectories([joined, back])
    _check_valid(env, both)


def test_a_rollout_records_the_log_probs_that_a_separate_pass_gives():
    """rollout_with_log_probs: the same trajectories as rollout (the same random draws) and the per-step
    log P_F, log P_B of log_probs(model, traj), for uniform and learned P_B, MLP and SSR policies."""
    from adaptive_teacher.envs.strings import PrependAppendStrings
    from adaptive_teacher.ssr import SSRPolicy

    grid = DeceptiveGrid(3, 5)
    strings = PrependAppendStrings(3, 4, lambda x: 0.1 + (x == 0).sum(-1).double())
    cases = [
        (grid, DiscretePolicy(grid.n_features, grid.n_actions, grid.n_backward_actions, hidden=16)),
        (grid, DiscretePolicy(grid.n_features, grid.n_actions, grid.n_backward_actions, hidden=16, learn_pb=True)),
        (strings, SSRPolicy(strings.n_features, hidden=16)),
        (strings, SSRPolicy(strings.n_features, hidden=16, learn_pb=True)),
    ]
    for env, model in cases:
        torch.manual_seed(0)
        for p in model.parameters():
            p.data.mul_(3.0)  # far from uniform
        torch.manual_seed(1)
        plain = env.rollout(model, 256)
        torch.manual_seed(1)
        traj, lp = env.rollout_with_log_probs(model, 256)
        assert torch.equal(traj.states, plain.states) and torch.equal(traj.actions, plain.actions)
        again = env.log_probs(model, traj)
        assert torch.equal(lp.valid, again.valid)
        assert torch.allclose(lp.log_pf, again.log_pf, atol=1e-5) and torch.allclose(lp.log_pb, again.log_pb, atol=1e-5)
        assert float(lp.log_pb.abs().sum()) > 0 and float(lp.log_pf.abs().sum()) > 0
