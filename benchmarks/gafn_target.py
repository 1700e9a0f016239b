"""What a trained GAFN Student is asked to sample, on an enumerable string task (QM9, TFBind8).

On these tasks every trajectory ends with a forced stop, so GAFN's augmented TB (objectives.py) targets
R(x) + r(x) at each terminal string, r(x) = ri_scale·‖f̂(x) − f(x)‖ the RND intrinsic reward. This prints
Σ_x R(x), Σ_x r(x) under the run's final RND predictor, and the mass that the augmented target R + r puts on
the task's modes, next to the run's own exact mode mass: a Student that fits R + r cannot fit R.

    python benchmarks/gafn_target.py runs/sweeps/strings-paper/qm9-beta20/gafn/seed0
"""

from __future__ import annotations

import argparse

import torch

import adaptive_teacher as at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a GAFN run directory on qm9 or tfbind8")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = at.load(args.run, device="cpu")
    trainer, env = result.trainer, result.student.env
    if trainer.rnd is None:
        raise SystemExit(f"{args.run} is not a GAFN run (no RND predictor in its checkpoint)")
    states = env.enumerate_states()
    if states is None:
        raise SystemExit(f"{args.run}: the task's strings cannot be enumerated")
    x = states[(states >= 0).all(1)]  # the full-length strings
    with torch.no_grad():
        r_i = torch.cat([trainer.rnd.intrinsic_reward(env.features(c)) for c in x.split(8192)]).double()
    reward = env.log_reward(x).double().exp()
    on_modes = env.is_mode(x)
    target = reward + r_i
    print(f"{args.run}: {len(x):,} strings, {int(on_modes.sum())} modes, after {trainer.counter.calls:,} reward calls")
    print(
        f"  sum R = {float(reward.sum()):.2f}   sum r = {float(r_i.sum()):.2f}   r per string: "
        f"mean {float(r_i.mean()):.2e}, max {float(r_i.max()):.2e}"
    )
    print(
        f"  mode mass: of R {float(reward[on_modes].sum() / reward.sum()):.3f}, "
        f"of R + r {float(target[on_modes].sum() / target.sum()):.3f}, "
        f"of the Student (last evaluation) {result.history[-1].get('mode_mass', float('nan')):.3f}"
    )


if __name__ == "__main__":
    main()
