import pytest

from autopeft.record.pareto import Point, Reference, dominates, hypervolume, knee, nondominated_fronts, pareto_front, pick


def P(trial, quality, params):
    return Point(trial=trial, quality=quality, params=params, pct=0.0)


POINTS = [P(0, 0.70, 100), P(1, 0.80, 300), P(2, 0.75, 400), P(3, 0.85, 900), P(4, 0.60, 50), P(5, 0.80, 300)]


def test_front_keeps_only_non_dominated_points_smallest_first():
    front = pareto_front(POINTS)
    assert [p.trial for p in front] == [4, 0, 1, 3]  # 2 is dominated by 1; 5 ties 1 and comes later


def test_the_front_above_the_quality_floor_leaves_out_points_that_learned_nothing():
    # trial 4 is the smallest plan, so non-dominated, but it scores the floor: no better than no adapter
    assert [p.trial for p in pareto_front(POINTS, floor=0.60)] == [0, 1, 3]
    assert [p.trial for p in pareto_front(POINTS, floor=0.59)] == [4, 0, 1, 3]
    assert pareto_front(POINTS, floor=0.85) == []
    ref = Reference(quality=0.60, params=1000)
    assert hypervolume(pareto_front(POINTS, ref.quality), ref) == pytest.approx(hypervolume(POINTS, ref))


def test_non_dominated_sorting_peels_one_front_after_another():
    fronts = nondominated_fronts(POINTS)
    assert [[p.trial for p in f] for f in fronts] == [[4, 0, 1, 3], [5], [2]]  # 5 ties 1 and waits a front; 5 dominates 2
    assert sorted(p.trial for f in fronts for p in f) == sorted(p.trial for p in POINTS)
    for better, worse in zip(fronts, fronts[1:]):
        assert all(any(dominates(q, p) or (q.quality, q.params) == (p.quality, p.params) for q in better) for p in worse)
    assert nondominated_fronts(POINTS, 1) == [pareto_front(POINTS)]
    assert nondominated_fronts(POINTS, 5) == fronts and nondominated_fronts([], 2) == []


def test_hypervolume_is_the_dominated_area_in_normalised_units():
    ref = Reference(quality=0.5, params=1000)
    # (0.6-0.5)*(1-0.05) + (0.7-0.6)*(1-0.1) + (0.8-0.7)*(1-0.3) + (0.85-0.8)*(1-0.9)
    expected = 0.1 * 0.95 + 0.1 * 0.9 + 0.1 * 0.7 + 0.05 * 0.1
    assert hypervolume(POINTS, ref) == pytest.approx(expected)


def test_points_beyond_the_reference_add_nothing():
    ref = Reference(quality=0.72, params=800)
    assert hypervolume([P(0, 0.70, 10), P(1, 0.9, 900)], ref) == 0.0
    assert hypervolume([P(0, 0.80, 400)], ref) == pytest.approx(0.08 * 0.5)


def test_hypervolume_grows_when_a_point_improves_the_front():
    ref = Reference(quality=0.5, params=1000)
    before = hypervolume(POINTS, ref)
    assert hypervolume(POINTS + [P(9, 0.84, 200)], ref) > before
    assert hypervolume(POINTS + [P(9, 0.7, 500)], ref) == pytest.approx(before)


def test_picks():
    front = pareto_front(POINTS)
    assert pick(front, "best").trial == 3
    assert pick(front, "smallest-above=0.75").trial == 1
    assert pick(front, "smallest-above=0.6").trial == 4
    assert knee(front).trial in {0, 1}
    with pytest.raises(ValueError, match="no point reaches quality 0.9"):
        pick(front, "smallest-above=0.9")
    with pytest.raises(ValueError, match="unknown pick"):
        pick(front, "largest")
    assert pick(front, "trial=3").trial == 3
    dominated = next(p for p in POINTS if p not in front)
    assert pick(front, f"trial={dominated.trial}", POINTS) == dominated
    with pytest.raises(ValueError, match="trial 99 has no finished result; the front's trials are"):
        pick(front, "trial=99", POINTS)


def test_hypervolume_trace_grows_trial_by_trial_to_the_final_hypervolume():
    from autopeft.dashboards.hypervolume_chart import hypervolume_png, hypervolume_trace

    ref = Reference(quality=0.5, params=1000)
    trace = hypervolume_trace(POINTS, ref)
    assert len(trace) == len(POINTS) and trace == sorted(trace)
    assert trace[-1] == pytest.approx(hypervolume(POINTS, ref))
    assert hypervolume_png(POINTS, ref, "t").startswith(b"\x89PNG")


def test_the_front_says_which_baselines_it_dominates_and_by_which_trial():
    from autopeft.cli import format_front

    front = [Point(3, 0.80, 100, 0.1, "small"), Point(7, 0.90, 1000, 1.0, "large")]
    baselines = {"lora-r8": Point(-1, 0.70, 500, 0.5), "ia3": Point(-1, 0.85, 200, 0.2), "full": Point(-1, 0.95, 5000, 100.0)}
    table = format_front(front, Reference(0.5, 10_000), "accuracy", baselines).splitlines()
    assert table[-2] == "dominated by the front: lora-r8 (by trial 3); not dominated: ia3, full"
    assert table[-1].startswith("reference point:")
    assert format_front([], Reference(0.5, 10_000), "accuracy", baselines).splitlines()[-2] == \
        "not dominated: ia3, lora-r8, full"
    everything = {"lora-r8": Point(-1, 0.70, 500, 0.5), "ia3": Point(-1, 0.75, 1000, 1.0)}
    assert format_front(front, Reference(0.5, 10_000), "accuracy", everything).splitlines()[-2] == \
        "dominated by the front: lora-r8 (by trial 3), ia3 (by trial 3)"
    learned_nothing = {"ia3": Point(-1, 0.50, 50, 0.05), "prefix-10": Point(-1, 0.45, 60, 0.06), "lora-r8": Point(-1, 0.85, 90, 0.09)}
    assert format_front(front, Reference(0.5, 10_000), "accuracy", learned_nothing).splitlines()[-2] == \
        "not dominated: lora-r8; at or under the quality floor (learned nothing): ia3, prefix-10"
    from autopeft.dashboards.report import ReportData, report_html

    page = report_html(ReportData(name="s", metric="accuracy", status="finished", summary="", reference=Reference(0.5, 10_000),
                                  points=front, front=front, baselines=baselines, trials=[],
                                  final_front=front[1:], final_baselines={"lora-r8": Point(-1, 0.70, 500, 0.5)}))
    assert "<p>dominated by the front: lora-r8 (by trial 3); not dominated: ia3, full</p>" in page
    assert "<p>not dominated: lora-r8</p>" in page  # the re-evaluated front, of trial 7 alone, is dearer than lora-r8


def test_the_points_the_re_evaluation_puts_off_the_front_are_named_with_their_means_and_why():
    from autopeft.record.pareto import off_the_front

    def R(trial, quality, params, std=0.01):
        return Point(trial=trial, quality=quality, params=params, pct=0.0, std=std, seeds=3)

    front = [P(1, 0.70, 100), P(2, 0.75, 200), P(3, 0.80, 300), P(4, 0.85, 400), P(5, 0.90, 500)]
    # re-trained over seeds: 1 now scores the floor, 3 falls under 2, 4 ties trial 0 (of the second front, as large and
    # earlier), 6 (of the second front too) joins the front, 5 holds
    final = [R(0, 0.80, 400), R(1, 0.60, 100), R(2, 0.78, 200), R(3, 0.74, 300, std=0.2), R(4, 0.80, 400),
             R(5, 0.90, 500), R(6, 0.88, 450)]
    text = off_the_front(front, final, floor=0.60)
    assert text == ("off the front on re-evaluation: trial 1 (0.6000 ± 0.0100, 100 trainable; at or under the quality "
                    "floor 0.6000), trial 3 (0.7400 ± 0.2000, 300 trainable; dominated by trial 2), trial 4 (0.8000 ± "
                    "0.0100, 400 trainable; the same as trial 0)")
    assert [p.trial for p in pareto_front(final, 0.60)] == [2, 0, 6, 5]
    assert "trial 6" not in text and "trial 5" not in text  # 6 was not on the search's front; 5 stays on it
    assert off_the_front(front, [R(p.trial, p.quality, p.params) for p in front], floor=0.60) == ""
    assert off_the_front(front, [], floor=0.60) == ""  # nothing re-evaluated yet

    from autopeft.dashboards.report import ReportData, report_html

    page = report_html(ReportData(name="s", metric="accuracy", status="finished", summary="", reference=Reference(0.6, 1000),
                                  points=front, front=front, baselines={}, trials=[],
                                  final_front=pareto_front(final, 0.6), final_points=final))
    assert f"<p>{text}</p>" in page
    # every re-trained point fell to the floor: the re-evaluated front is empty, and the page still says what happened
    collapsed = [R(p.trial, 0.55, p.params) for p in front]
    page = report_html(ReportData(name="s", metric="accuracy", status="finished", summary="", reference=Reference(0.6, 1000),
                                  points=front, front=front, baselines={}, trials=[], final_front=[], final_points=collapsed))
    assert "<h2>Re-evaluated front (3 new seeds per point, mean ± std)</h2>" in page
    assert "<p>off the front on re-evaluation: trial 1 (0.5500 ± 0.0100, 100 trainable; at or under the quality floor 0.6000)" in page


def test_re_trainings_that_learned_nothing_are_counted_per_point_and_named_under_the_re_evaluated_front():
    import optuna

    from autopeft.cli import format_final_front
    from autopeft.dashboards.report import ReportData, report_html
    from autopeft.record.study import FINAL, REFERENCE, StudyRecord

    study = optuna.create_study(directions=["maximize", "minimize"])
    for number, (quality, params) in enumerate([(0.70, 100), (0.80, 300)]):
        study.add_trial(optuna.trial.create_trial(values=[quality, params], user_attrs={"plan_summary": f"plan {number}"}))
    study.set_user_attr(REFERENCE, {"quality": 0.5, "params": 1000})
    study.set_user_attr("baselines", {"ia3": {"quality": 0.6, "params": 50, "pct": 0.1, "plan": "ia3 key"}})
    study.set_user_attr(FINAL, {"trial:0": {"1": {"quality": 0.72}, "2": {"quality": 0.5}},  # seed 2 at the floor
                                "trial:1": {"1": {"quality": 0.81}, "2": {"quality": 0.79}},
                                "baseline:ia3": {"1": {"quality": 0.49}, "2": {"quality": 0.3}, "3": {"error": "x"}}})
    points, baselines = StudyRecord(study).final_points()
    assert [(p.trial, p.seeds, p.floored) for p in points] == [(0, 2, 1), (1, 2, 0)]
    assert (baselines["ia3"].seeds, baselines["ia3"].floored) == (2, 2)
    told = ("seeds that learned nothing (at or under the quality floor): trial 0 (1 of 2), ia3 (2 of 2); the means "
            "count them: a plan that collapses in some trainings does not train reliably at its learning rate")
    search = StudyRecord(study).finished_points()
    text = format_final_front(search, pareto_front(points, 0.5), points, Reference(0.5, 1000), "accuracy", baselines)
    assert text.splitlines()[-1] == told
    page = report_html(ReportData(name="s", metric="accuracy", status="finished", summary="", reference=Reference(0.5, 1000),
                                  points=search, front=search, baselines={}, trials=[], final_front=pareto_front(points, 0.5),
                                  final_points=points, final_baselines=baselines))
    assert f"<p>{told}</p>" in page
    steady = [p for p in points if p.trial == 1]
    assert told not in format_final_front(search, steady, steady, Reference(0.5, 1000), "accuracy", {})
