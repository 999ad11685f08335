"""Every selectable sampler proposes valid points of the PEFT space through the study."""

import optuna
import pytest

from autopeft.optimize.domain import space_domain
from autopeft.optimize.registry import SAMPLERS, make_sampler
from autopeft.record.pareto import Reference
from autopeft.record.study import DIRECTIONS
from autopeft.space.search_space import load_space
from autopeft.workers.models import model_shape


@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_proposes_decodable_points_with_trials_running(tiny_bert, name):
    space = load_space("lora", model_shape(tiny_bert, num_labels=2))
    domain = space_domain(space, None, Reference(0.5, space.count(space.largest_plan()) + 1))
    study = optuna.create_study(directions=DIRECTIONS, sampler=make_sampler(name, seed=0, n_startup_trials=4, domain=domain))
    distributions = domain.distributions()
    pending = []
    for _ in range(14):
        trial = study.ask(distributions)
        plan = space.decode(trial.params)
        assert set(trial.params) == set(distributions)
        pending.append((trial, plan))
        if len(pending) == 2:  # two trials in flight, as with two workers
            done, plan = pending.pop(0)
            quality = 0.5 + 0.01 * sum(t.rank for t in plan['lora'].targets) if 'lora' in plan else 0.5
            study.tell(done, [quality, float(space.count(plan))])
    assert len(study.trials) == 14
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 13


def test_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("cmaes", seed=0)
    with pytest.raises(ValueError, match="domain"):
        make_sampler("autopeft", seed=0)
