import torch

import adaptive_teacher as at


def test_user_defined_reward_train_sample_and_load(tmp_path):
    def my_reward(states: torch.Tensor) -> torch.Tensor:
        """Two bumps on a 2-D grid of side 8."""
        d1 = ((states - torch.tensor([1, 6])) ** 2).sum(-1)
        d2 = ((states - torch.tensor([6, 1])) ** 2).sum(-1)
        return 1e-3 + torch.exp(-d1.double()) + torch.exp(-d2.double())

    env = at.Hypergrid(dim=2, height=8, reward_fn=my_reward)
    result = at.train(env, method="teacher", reward_calls=800, seed=0, out=tmp_path, hidden=32, progress=False)
    assert result.summary["reward_calls"] >= 800
    x = result.student.sample(50)
    assert x.shape == (50, 2) and int(x.max()) <= 7
    p = result.student.exact_distribution()
    assert abs(float(p.sum()) - 1) < 1e-9
    loaded = at.load(tmp_path, env=env)
    assert loaded.summary["step"] == result.summary["step"]
    for a, b in zip(loaded.student.policy.parameters(), result.student.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    assert loaded.teacher is not None
