"""The ``autopeft`` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import warnings

from autopeft import api
from autopeft.errors import UserError
from autopeft.job.load import BUILTIN_JOBS
from autopeft.job.secrets import mask_uri
from autopeft.job.spec import FLOORS
from autopeft.record.pareto import (
    PICKS,
    Point,
    Reference,
    beaten_by,
    beaten_text,
    counted,
    floored_text,
    mean_std,
    off_the_front,
    pareto_front,
    per_point,
)
from autopeft.record.storage import StoreUnavailable


def _quality(p: Point, width: int) -> str:
    text = mean_std(p.quality, p.std)
    return f"{text:>{width}}"


def _test(p: Point, width: int) -> str:
    """The test column's cell (none where ``width`` is 0: no point has a test score)."""
    if not width:
        return ""
    text = "-" if p.test is None else mean_std(p.test, p.test_std)
    return f"  {text:>{width}}"


def format_front(front: list[Point], reference: Reference, metric: str, baselines: dict[str, Point] | None = None) -> str:
    """The front as a table; re-evaluated points show their mean quality ± its std over seeds, and their mean score on
    the test examples in a column of its own where any has one."""
    points = [*front, *(baselines or {}).values()]
    width = 18 if any(p.std is not None for p in points) else 9
    tested = max(18, len(metric) + 5) if any(p.test is not None for p in points) else 0
    first = max([9, *map(len, baselines or {})])  # the trial number, or a baseline's name

    def row(label, p: Point) -> str:
        return f"{label:>{first}}  {_quality(p, width)}{_test(p, tested)}  {p.params:>10,}  {p.pct:>9.4f}  {p.plan}"

    header = f"  {'test ' + metric:>{tested}}" if tested else ""
    lines = [f"{'trial':>{first}}  {metric:>{width}}{header}  {'trainable':>10}  {'% of base':>9}  plan"]
    lines += [row(p.trial, p) for p in front]
    if baselines:
        lines.append("baselines:")
        lines += [row(name, p) for name, p in sorted(baselines.items(), key=lambda item: item[1].params)]
        lines.append(beaten_text(front, baselines, reference.quality))
    lines.append(f"reference point: {metric} {reference.quality:.4f}, {reference.params:,} trainable parameters")
    return "\n".join(lines)


def format_final_front(search_front: list[Point], final_front: list[Point], final_points: list[Point], reference: Reference,
                       metric: str, baselines: dict[str, Point]) -> str:
    """The re-evaluated front as ``format_front`` gives it, and under it the lines naming the points of the search's
    front that the re-evaluation put off it (``final_points``: every re-evaluated trial) and the re-trainings that
    learned nothing."""
    said = [off_the_front(search_front, final_points, reference.quality), floored_text(final_points, baselines)]
    return "\n".join([format_front(final_front, reference, metric, baselines), *filter(None, said)])


def silent_rungs_text(silent: list[tuple[int, int, float]], rungs: tuple[float, ...]) -> str:
    """What a search with rungs should know about rungs that told no plan apart, and what to change."""
    told = " ".join(f"Rung {r + 1} of {len(rungs)}, at {rungs[r]:.3g} of the training, told no plan apart: all {n} "
                    f"trials scored {q:.4f} there." for r, n, q in silent)
    kept = [f"{f:.3g}" for i, f in enumerate(rungs) if i not in {r for r, _, _ in silent}]
    fix = (f"leave it out (fidelity.rungs: [{', '.join(kept)}]) or train longer (fidelity.epochs)" if len(kept) > 1 else
           "train longer (fidelity.epochs) or train every trial to the end (fidelity.schedule: full)")
    return (f"{told} The optimizer learned nothing from {'them' if len(silent) > 1 else 'it'}, and promotions went "
            f"by the validation loss alone. Fix: {fix}.")


def nothing_learned_text(metric: str, reference: Reference, floor: str, baselines: dict[str, Point],
                         steps: int | None = None) -> str:
    """What a search whose every trial scored at or under its quality floor should tell, and what to change."""
    told = f"No trial scored above the quality floor ({metric} {reference.quality:.4f}: {FLOORS[floor]})"
    learned = sorted(name for name, p in baselines.items() if p.quality > reference.quality)
    trained = f" Each trial trained {steps:,} optimizer steps." if steps is not None else ""
    if learned:
        return (f"{told}, where the baselines {', '.join(learned)} did: the search's plans learned nothing at their "
                f"learning rates.{trained} Fix: search the rates the baselines train at (fidelity.learning_rate, and "
                f"learning_rate in the space file), under a new job name (a search resumes only as it started).")
    return (f"{told}: no plan learned the task at this fidelity.{trained} Fix: train longer (fidelity.epochs, "
            f"fidelity.train_examples), in smaller batches (fidelity.batch_size) or at another learning rate "
            f"(fidelity.learning_rate), under a new job name (a search resumes only as it started).")


def nothing_finished_text(summary, job_arg: str, trials: int) -> str:
    """What a search none of whose trials finished should tell: the last error, and how to run the search again."""
    return (f"No trial finished: {summary.failed_text()}. The last one: {summary.last_failure}. Every trial's reason: "
            f"autopeft watch {job_arg} --once. Fix: mend what the error says, then run the search again under a new job "
            f"name, or with more trials (autopeft submit {job_arg} --trials {trials + summary.failed}): failed trials "
            f"count against budget.trials.")


def failed_baselines_text(failed: dict[str, str]) -> str:
    """The baselines that failed, each with what made it fail, and how to retry them."""
    return ("Baselines that failed: " + "; ".join(f"{name} ({reason})" for name, reason in sorted(failed.items()))
            + f". Submit the same job again to retry {'them' if len(failed) > 1 else 'it'}.")


def _learned_nothing(front: list[Point], scored: int) -> bool:
    """Trials were scored and none is on the front: every one scored at or under the quality floor."""
    return scored > 0 and not front


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def step(message: str) -> None:
    """Say what a long command is doing now, on a terminal only (piped or logged output stays clean)."""
    if sys.stderr.isatty():
        print(f"autopeft: {message}...", file=sys.stderr, flush=True)


def _as_run(job, name: str):
    """The job as it runs: a built-in demo job runs as it is wherever it is run, as many trials at once as the machine holds."""
    if name in BUILTIN_JOBS:
        from autopeft.run.prepare import parallel_that_fits

        job = job.model_copy(update={"budget": job.budget.model_copy(update={"parallel": parallel_that_fits(job)})})
    return job


def cmd_submit(args) -> int:
    from autopeft.run.check import cautions, example_lengths, train_steps

    job = api.load_job(args.job)
    if args.trials is not None and args.trials < 0:
        raise UserError("--trials", f"{args.trials} is negative", "give 0 or more trials")
    if args.trials is not None:
        job = job.model_copy(update={"budget": job.budget.model_copy(update={"trials": args.trials})})
    if args.address is not None:
        job = job.model_copy(update={"stores": job.stores.model_copy(update={"ray_address": args.address})})
    job = _as_run(job, args.job)
    step(f"checking the job: loading {job.model}, the data and the search space")
    prepared = api.prepare(job)
    print(f"autopeft: search '{job.name}': {job.budget.trials} trials, {job.budget.parallel} in parallel, "
          f"space '{prepared.space.spec.name}' ({len(prepared.space.dimensions)} dimensions), "
          f"model {job.model} ({prepared.shape.base_params:,} parameters), {train_steps(prepared):,} optimizer steps "
          f"a trial", flush=True)
    print(f"autopeft: run directory {job.run_dir}", flush=True)
    for caution in cautions(prepared, example_lengths(prepared)):
        print(f"autopeft: caution: {caution}", flush=True)
    summary = api.submit(job, progress=not args.no_progress, prepared=prepared)
    print(f"\nPareto front ({counted(len(summary.front), 'point')}, {counted(summary.finished, 'trial')}, {summary.failed_text()}, "
          f"hypervolume {summary.hypervolume:.4f}):")
    print(format_front(summary.front, summary.reference, job.task.metric, summary.baselines))
    if summary.failed_baselines:
        print("\n" + failed_baselines_text(summary.failed_baselines))
    if summary.silent_rungs:
        print("\n" + silent_rungs_text(summary.silent_rungs, job.fidelity.rungs))
    learned_nothing = _learned_nothing(summary.front, summary.scored)
    if learned_nothing:
        print("\n" + nothing_learned_text(job.task.metric, summary.reference, job.floor_kind, summary.baselines,
                                          train_steps(prepared)))
    if summary.final_points or summary.final_baselines:
        print(f"\nRe-evaluated front ({per_point(job.final.seeds)}; "
              f"hypervolume {summary.final_hypervolume:.4f}):")
        print(format_final_front(summary.front, summary.final_front, summary.final_points, summary.reference,
                                 job.task.metric, summary.final_baselines))
    name = args.job
    if not summary.scored and summary.failed:
        print("\n" + nothing_finished_text(summary, name, job.budget.trials))
        return 1
    print(f"\nWatch it:   autopeft ui {name}")
    if not learned_nothing:
        print(f"Export it:  autopeft export {name} --pick knee --out {job.name}-adapter")
    return 0


def cmd_check(args) -> int:
    from autopeft.run.check import format_check

    step("checking the job: loading the model's shape, the data and the search space")
    checked = api.check(_as_run(api.load_job(args.job), args.job))
    print(json.dumps(checked.to_dict(), indent=2) if args.json else format_check(checked))
    return 0


def cmd_pareto(args) -> int:
    job = api.load_job(args.job)
    step(f"reading the study of '{job.name}'")
    front, reference = api.read_front(job)
    baselines = api.read_baselines(job)
    failed_baselines = api.read_failed_baselines(job)
    final_points, final_baselines = api.read_final(job, every_point=True)
    final = pareto_front(final_points, reference.quality)
    if args.json:
        def trials(front: list[Point], baselines: dict[str, Point]) -> dict[str, int | None]:
            return {n: None if p is None else p.trial for n, p in beaten_by(front, baselines).items()}

        print(json.dumps({"reference": reference.__dict__, "front": [p.to_dict() for p in front],
                          "baselines": {n: p.to_dict() for n, p in baselines.items()},
                          "baselines_dominated_by": trials(front, baselines), "failed_baselines": failed_baselines,
                          "final_front": [p.to_dict() for p in final],
                          "final_points": [p.to_dict() for p in final_points],
                          "final_baselines": {n: p.to_dict() for n, p in final_baselines.items()},
                          "final_baselines_dominated_by": trials(final, final_baselines)}, indent=2))
    else:
        print(format_front(front, reference, job.task.metric, baselines))
        if failed_baselines:
            print("\n" + failed_baselines_text(failed_baselines))
        if _learned_nothing(front, api.count_scored(job)):
            print("\n" + nothing_learned_text(job.task.metric, reference, job.floor_kind, baselines))
        if final_points or final_baselines:
            seeds = max(p.seeds for p in [*final_points, *final_baselines.values()])
            print(f"\nRe-evaluated front ({per_point(seeds)}):")
            print(format_final_front(front, final, final_points, reference, job.task.metric, final_baselines))
    return 0


def cmd_export(args) -> int:
    job = api.load_job(args.job)
    step(f"exporting the {args.pick} point of '{job.name}'")
    exported = api.export(job, args.pick, args.out)
    p = exported.point
    quality = mean_std(p.quality, p.std) + (f" over {counted(p.seeds, 'seed')}" if p.seeds else "")
    if p.test is not None:
        quality += f"; test {mean_std(p.test, p.test_std)}"
    print(f"exported {exported.source} ({quality}, {p.params:,} trainable parameters, {p.plan}) to {exported.out}")
    if exported.seed is not None:
        own = f"{job.task.metric} {exported.adapter_quality:.4f}" + (
            f", test {exported.adapter_test:.4f}" if exported.adapter_test is not None else "")
        print(f"  the adapter re-trained with seed {exported.seed}, the best of its seeds on validation ({own})")
    print("  " + "  ".join(sorted(p.name for p in exported.out.iterdir())))
    print(f"load it: {exported.load_with.replace('DIR', repr(str(exported.out)))}")
    if p.quality <= exported.floor:
        print(f"autopeft: caution: {exported.source} scored {p.quality:.4f}, at or under the search's quality floor "
              f"({exported.floor:.4f}): it learned nothing the floor does not give", file=sys.stderr)
    return 0


def cmd_ui(args) -> int:
    from autopeft.record.tracking import mlflow_client, view_path

    job = api.load_job(args.job)
    if job.stores.mlflow_uri is not None and job.stores.mlflow_uri.startswith(("http://", "https://")):
        server = mask_uri(job.stores.mlflow_uri).rstrip("/")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        try:
            experiment = mlflow_client(job.mlflow_uri).get_experiment_by_name(job.name)
        except Exception:  # the server is down or refuses: still say where to look
            experiment = None
        where = f"{server}{view_path(experiment.experiment_id)}" if experiment else f"{server} (experiment '{job.name}')"
        print(f"'{job.name}' is tracked on the MLflow server: open {where}")
        return 0
    if job.stores.mlflow_uri is None and not job.layout.mlflow_db.is_file():
        raise UserError("run", f"no MLflow store for job '{job.name}' yet ({job.layout.mlflow_db})", "run 'autopeft submit' first")
    experiment = mlflow_client(job.mlflow_uri).get_experiment_by_name(job.name)
    url = f"http://127.0.0.1:{args.port}" + (view_path(experiment.experiment_id) if experiment else "")
    print(f"MLflow UI for '{job.name}' at {url}  (experiment '{job.name}'; Ctrl-C stops it)", flush=True)
    # one web worker and no job runner: a local dashboard for one user, not a shared tracking server
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", job.mlflow_uri,
               "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(command, env=env, start_new_session=True)  # its own group: stopped with its workers below
    try:
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_group(server)


def _watched(target: str):
    """The study of the search ``target`` names: a job file (or demo name), a run directory or a study database."""
    from pathlib import Path

    from autopeft.record.study import StudyRecord

    path = Path(target)
    job = None if path.is_dir() or path.suffix == ".db" else api.load_job(target)
    try:
        return StudyRecord.load(job) if job is not None else StudyRecord.at(path, "watch")
    except UserError:
        raise
    except Exception as exc:  # the study's store cannot be reached or read
        store = mask_uri(job.optuna_storage) if job is not None else str(path)
        raise UserError("stores.optuna_storage", f"cannot read the study store {store}: {str(exc).strip().splitlines()[0]}",
                        "check that the store is up and reachable from this machine") from None


def render_snapshot(snap) -> str:
    """A search's snapshot as the text ``autopeft watch`` shows."""
    width = 30
    filled = int(width * min(snap.done, snap.trials) / max(1, snap.trials))
    best = f"best {snap.metric} {snap.best:.4f}" if snap.best is not None else f"no {snap.metric} yet"
    lines = [f"search '{snap.name}': {snap.status}",
             f"trials [{'#' * filled}{'.' * (width - filled)}] {snap.done}/{snap.trials}, {snap.failed} failed"
             + (f"; baselines {snap.baselines_done}/{snap.baselines}" if snap.baselines else "")
             + (f", {len(snap.failed_baselines)} failed" if snap.failed_baselines else "")
             + f"; {best}; front {counted(len(snap.front), 'point')}; hypervolume {snap.hypervolume:.4f}"]
    final = snap.final
    if final is not None and final.total:
        filled = int(width * (final.done + final.failed) / final.total)
        lines.append(f"re-evaluation [{'#' * filled}{'.' * (width - filled)}] {final.done + final.failed}/{final.total} "
                     f"trainings with new seeds ({final.seeds} per point), {final.failed} failed")
    if snap.waiting or snap.pruned:
        lines.append(f"rungs: {snap.waiting} trials waiting after a rung, {snap.pruned} pruned")
    if snap.silent_rungs:
        lines.append(silent_rungs_text(snap.silent_rungs, snap.rungs))
    if snap.devices:
        lines.append("trained on: " + ", ".join(f"{d} ({n})" for d, n in sorted(snap.devices.items())))
    if snap.running:
        lines += ["", "running now:", f"{'trial':>9}  {'elapsed':>8}  plan" + ("  (node)" if any(r.node for r in snap.running) else "")]
        lines += [f"{'' if r.trial is None else r.trial:>9}  {r.seconds:>7.0f}s  {r.plan}" + (f"  ({r.node})" if r.node else "")
                  for r in snap.running]
    if snap.failures or snap.failed_baselines:
        lines += ["", "failed:", f"{'trial':>9}  reason"]
        lines += [f"{f.trial:>9}  {f.reason}" for f in snap.failures[-10:]]
        lines += [f"{'baseline':>9}  {name}: {reason}" for name, reason in sorted(snap.failed_baselines.items())]
    if snap.front:
        lines += ["", "Pareto front:", format_front(snap.front, snap.reference, snap.metric, snap.baseline_points)]
    else:
        if snap.best is not None:
            lines += ["", f"Pareto front: no trial has scored above the quality floor ({snap.metric} {snap.reference.quality:.4f}) yet"]
        if snap.baseline_points:
            lines += ["", format_front([], snap.reference, snap.metric, snap.baseline_points)]
    if final is not None and (final.points or final.baselines):
        seeds = final.seeds or max(p.seeds for p in [*final.points, *final.baselines.values()])
        title = (f"Re-evaluated front{'' if final.over else ' so far'} ({per_point(seeds)}; "
                 f"hypervolume {final.hypervolume:.4f}):")
        lines += ["", title, format_final_front(snap.front, final.front, final.points, snap.reference, snap.metric,
                                                final.baselines)]
    return "\n".join(lines)


def cmd_watch(args) -> int:
    import time

    from autopeft.record.lease import live_driver
    from autopeft.record.snapshot import snapshot

    record = _watched(args.target)
    live = sys.stdout.isatty() and not args.once
    shown = None
    while True:
        started = record.started  # read once per pass: the search may start between two reads
        if not started and live_driver(record.study) is not None:
            text = f"search '{record.study.study_name}': starting (its reference point is being measured)"
        else:
            snap = snapshot(record)
            text = render_snapshot(snap)
        if live:
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")  # redraw in place
            sys.stdout.flush()
        elif text != shown:
            print(text + "\n", flush=True)
        shown = text
        if args.once or (started and snap.driver is None):
            return 0
        time.sleep(args.interval)


def cmd_report(args) -> int:
    from pathlib import Path

    from autopeft.record.snapshot import report_page

    step("reading the study")
    record = _watched(args.target)
    if args.out is not None:
        out = Path(args.out)
    else:
        target = Path(args.target)
        run_dir = target if target.is_dir() else target.parent if target.suffix == ".db" else api.load_job(args.target).run_dir
        out = run_dir / "report.html"
    step("drawing the charts")
    page = report_page(record)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(page)
    partial.replace(out)  # a reader never sees half a page
    print(f"wrote {out} ({len(page) // 1024} KiB): open it in a browser")
    return 0


def _stop_group(process: subprocess.Popen) -> None:
    """Stop ``process`` and every process it started (a server's workers)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


STACK = ("peft", "transformers", "torch", "optuna", "botorch", "ray", "mlflow")


def version_text() -> str:
    """``autopeft 0.1.0 (peft 0.21.2, transformers ...)``: what a bug report needs, read without importing any of them."""
    from importlib.metadata import PackageNotFoundError, version

    from autopeft import __version__

    def installed(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} not installed"

    return f"autopeft {__version__} ({', '.join(map(installed, STACK))})"


class _ShowVersion(argparse.Action):
    """``--version``: the versions are read when asked for, not on every start."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autopeft", description="Search PEFT configurations: quality vs trainable parameters.")
    parser.add_argument("--version", action=_ShowVersion, nargs=0,
                        help="show autopeft's version and those of the libraries it runs on, and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    job_help = "job YAML file, or 'demo' / 'demo-decoder' for a built-in demo job"

    p = sub.add_parser("submit", help="run (or resume) the search a job file describes")
    p.add_argument("job", help=job_help)
    p.add_argument("--trials", type=int, help="override budget.trials")
    p.add_argument("--address", help="the Ray cluster to run on (ray://HOST:10001 or HOST:6379); overrides stores.ray_address "
                                      "and RAY_ADDRESS")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("check", help="show what a job would search (model, data, space, budget, memory, baselines); "
                                      "runs and writes nothing")
    p.add_argument("job", help=job_help)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="run the built-in demo search (MiniLM-L6, Rotten Tomatoes, LoRA)")
    p.add_argument("--decoder", action="store_const", const="demo-decoder", default="demo", dest="job",
                   help="the decoder demo instead: SmolLM2-135M answers 'fresh or rotten?', LoRA and IA3 placements")
    p.add_argument("--trials", type=int, help="override the demo's number of trials")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_submit, address=None)

    p = sub.add_parser("pareto", help="print the Pareto front of a job's search")
    p.add_argument("job", help=job_help)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_pareto)

    p = sub.add_parser("export", help="write a Pareto point as a peft adapter folder")
    p.add_argument("job", help=job_help)
    p.add_argument("--pick", default="knee", help=f"which point: {PICKS} (default knee)")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("watch", help="follow a search that runs elsewhere: progress, running trials, failures, front")
    p.add_argument("target", help="the job file (or 'demo'), the run directory or the study database of the search")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between looks at the study (default 2)")
    p.add_argument("--once", action="store_true", help="print one look and exit")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("report", help="write a search's charts and tables as one self-contained HTML page")
    p.add_argument("target", help="the job file (or 'demo'), the run directory or the study database of the search")
    p.add_argument("--out", help="the HTML file to write (default: report.html in the search's run directory)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for a job's search")
    p.add_argument("job", help=job_help)
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
    return parser


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM or SIGHUP stops a search as Ctrl-C does: running trials recorded, resumable


def main(argv: list[str] | None = None) -> int:
    _quiet()
    if threading.current_thread() is threading.main_thread():
        for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too where a shell ignores it (a background job)
            signal.signal(stop, _terminated)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # a job's own trainer module may live here; installed packages come first
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"autopeft: error: {exc}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("\nautopeft: interrupted; submit the same job again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (autopeft watch ... | head): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except StoreUnavailable as exc:
        print(f"autopeft: {exc}", file=sys.stderr)
        return 1
