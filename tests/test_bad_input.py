"""Bad input: one clear message naming the field and the fix, exit status 2, nothing written."""

from pathlib import Path

import pytest
import yaml

from autopeft.cli import main
from conftest import free_port, write_job


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_nothing_written(tmp_path):
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "autopeft_runs").exists()
    assert not list(tmp_path.rglob("*.db"))


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def space_file(tmp_path, ranks, layers="per_layer", learning_rate="search"):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "modules": {"lora": {"groups": {"ffn_in": ranks}}}, "layers": layers,
                                    "learning_rate": learning_rate}))
    return "space.yaml"


def _labelled(directory: Path, labels: list) -> None:
    """A job on a CSV of sentences whose ``gold`` column holds ``labels``."""
    (directory / "pairs.csv").write_text("text,gold\n" + "".join(f"sentence {i},{v}\n" for i, v in enumerate(labels)))
    write_job(directory, task={"train_file": "pairs.csv", "label_column": "gold", "validation_size": 10})


def _with_test_file(directory: Path, test: str | None, final: dict | None = None) -> None:
    """A job on a CSV of sentences labelled a or b, re-evaluated over 2 seeds, with ``test`` as its test file."""
    (directory / "pairs.csv").write_text("text,gold\n" + "".join(f"sentence {i},{'ab'[i % 2]}\n" for i in range(40)))
    if test is not None:
        (directory / "test.csv").write_text(test)
    write_job(directory, task={"train_file": "pairs.csv", "label_column": "gold", "validation_size": 10,
                               "test_file": "test.csv"}, final=final or {"seeds": 2})


CASES = {
    "syntax error": (lambda d: (d / "job.yaml").write_text("name: t\nmodel: [minilm-l6\n"), ["YAML syntax error at line", "fix the YAML syntax"]),
    "unknown key": (lambda d: write_job(d, trials=3), ["unknown field 'trials'", "budget"]),
    "unknown nested key": (lambda d: write_job(d, budget={"trails": 3}), ["budget.trails", "unknown field 'trails'", "trials"]),
    "missing field": (lambda d: (d / "job.yaml").write_text(yaml.safe_dump({"name": "t", "task": {"dataset": "rotten_tomatoes"}})), ["model", "required field is missing"]),
    "missing data file": (lambda d: write_job(d, task={"train_file": "nope.csv"}), ["task.train_file", "nope.csv' does not exist"]),
    "missing label column": (lambda d: write_job(d, task={"dataset": "rotten_tomatoes", "label_column": "stars"}), ["task.label_column: column 'stars' is not in", "Fix: name one of its columns in task.label_column: text, label"]),
    "missing text column": (lambda d: write_job(d, task={"dataset": "rotten_tomatoes", "text_columns": "review"}),
                            ["task.text_columns: column 'review' is not in", "Fix: name one of its columns in task.text_columns: text, label"]),
    "space without dimension": (lambda d: write_job(d, search_space=space_file(d, [8], layers="all", learning_rate="fixed")),
                                ["space.yaml", "no dimension"]),
    "learning rate not a rate": (lambda d: write_job(d, search_space=space_file(d, [8], learning_rate=[0.001, 2])),
                                 ["learning_rate", "above 0 and at most 1"]),
    "rank wider than layer": (lambda d: write_job(d, search_space=space_file(d, [0, 512])), ["modules.lora.groups.ffn_in", "rank 512 is larger than the layer width 384", "at most 384"]),
    "unknown space": (lambda d: write_job(d, search_space="loraa"), ["search_space", "no built-in space 'loraa'", "lora"]),
    "unknown sampler": (lambda d: write_job(d, optimizer={"sampler": "cmaes"}), ["optimizer.sampler", "'gp'"]),
    "impossible budget": (lambda d: write_job(d, budget={"trials": 2, "max_trainable_params": 1000}), ["budget", "over the budget of 1000"]),
    "impossible memory budget": (lambda d: write_job(d, budget={"trials": 2, "max_memory_gb": 0.01}),
                                 ["budget.max_memory_gb", "over the budget of 0.01 GiB", "gradient_checkpointing"]),
    "unset variable in a store URI": (lambda d: write_job(d, stores={"optuna_storage": "postgresql://a:${AUTOPEFT_UNSET_VAR}@db/x"}),
                                      ["stores.optuna_storage", "environment variable AUTOPEFT_UNSET_VAR is not set"]),
    "trials is a boolean": (lambda d: write_job(d, budget={"trials": True}), ["budget.trials", "valid integer"]),
    "trials beyond reason": (lambda d: write_job(d, budget={"trials": 10**30}), ["budget.trials", "100000"]),
    "nothing to run": (lambda d: write_job(d, budget={"trials": 0}), ["budget.trials is 0", "name baselines"]),
    "parallel zero": (lambda d: write_job(d, budget={"parallel": 0}), ["budget.parallel", "greater than or equal to 1"]),
    "validation size 1.5": (lambda d: write_job(d, task={"dataset": "rotten_tomatoes", "validation_size": 1.5}),
                            ["task.validation_size", "neither a fraction below 1 nor a whole number"]),
    "nan quality floor": (lambda d: write_job(d, objectives={"quality_floor": float("nan")}), ["objectives.quality_floor", "finite"]),
    "gpus on a machine without": (lambda d: write_job(d, resources={"gpus": 64}), ["resources.gpus", "this machine has", "Ray cluster"]),
    "cpus beyond the machine": (lambda d: write_job(d, resources={"cpus": 1000}), ["resources.cpus", "asks for 1000 CPUs"]),
    "warm start from nothing": (lambda d: write_job(d, optimizer={"warm_start": "earlier"}),
                                ["optimizer.warm_start", "is neither a job file, a run directory nor a study database"]),
    "negative final seeds": (lambda d: write_job(d, final={"seeds": -1}), ["final.seeds", "greater than or equal to 0"]),
    "non-utf8 job file": (lambda d: (d / "job.yaml").write_bytes(b"name: t\nmodel: \xff\xfe minilm\n"), ["not UTF-8 text", "UTF-8"]),
    "key given twice": (lambda d: (d / "job.yaml").write_text("name: t\nmodel: minilm-l6\ntask:\n  dataset: rotten_tomatoes\n"
                                                             "search_space: lora\ntask:\n  dataset: sst2\n"),
                        ["key 'task' is given twice at line 6", "keep one"]),
    "empty model folder": (lambda d: ((d / "empty-model").mkdir(), write_job(d, model="./empty-model")), ["model", "cannot load"]),
    "trainer fails on import": (lambda d: ((d / "broken_trainer.py").write_text("raise RuntimeError('no GPU here')\n"),
                                           write_job(d, trainer="broken_trainer:train")),
                                ["trainer", "cannot import 'broken_trainer:train'", "RuntimeError: no GPU here"]),
    "missing trainer module": (lambda d: write_job(d, trainer="no_such_module:train"), ["trainer", "No module named"]),
    "bad optuna storage": (lambda d: write_job(d, stores={"optuna_storage": "notadb"}), ["stores.optuna_storage", "not a database URL"]),
    "unknown database driver": (lambda d: write_job(d, stores={"optuna_storage": "oracle+nosuchdriver://u:pw@h/db"}),
                                ["stores.optuna_storage"]),
    "bad mlflow uri": (lambda d: write_job(d, stores={"mlflow_uri": "ftp://x"}), ["stores.mlflow_uri", "not an MLflow tracking URI"]),
    "mlflow server not answering": (lambda d: write_job(d, stores={"mlflow_uri": f"http://127.0.0.1:{free_port()}"}),
                                    ["stores.mlflow_uri", "does not answer (cannot connect)", "start the server"]),
    "study database not answering": (lambda d: write_job(d, stores={"optuna_storage": f"postgresql://u:pw@127.0.0.1:{free_port()}/db"}),
                                     ["stores.optuna_storage", "cannot connect to the study database postgresql://***@127.0.0.1",
                                      "Connection refused", "start the database server"]),
    "ray cluster not answering": (lambda d: write_job(d, stores={"ray_address": f"ray://127.0.0.1:{free_port()}"}),
                                  ["stores.ray_address", "no Ray cluster answers at ray://127.0.0.1", "ray start --head"]),
    "more parallel trials than CPUs": (lambda d: write_job(d, budget={"trials": 2, "parallel": 512}),
                                       ["budget.parallel", "512 trials at a time need 512 CPUs (resources.cpus 1 each)",
                                        "a smaller resources.cpus"]),
    "job name too long": (lambda d: write_job(d, name="n" * 300), ["name", "at most 100 characters"]),
    "run dir is a file": (lambda d: ((d / "taken").write_text("x"), write_job(d, stores={"run_dir": "taken"})),
                          ["stores.run_dir", "is a file, not a folder"]),
    "parallel is text": (lambda d: write_job(d, budget={"parallel": "two"}),
                         ["budget.parallel", "integer (it is 'two')", "Fix: give a whole number"]),
    "inputs longer than the model takes": (lambda d: write_job(d, fidelity={"train_examples": 32, "max_seq_length": 1024}),
                                           ["fidelity.max_seq_length", "1024 tokens are more than minilm-l6 takes: its "
                                            "position embeddings hold 512", "use 512 or fewer"]),
    "prompt tuning past the model's positions": (
        lambda d: write_job(d, baselines=["prompt-20"], fidelity={"train_examples": 32, "max_seq_length": 500}),
        ["fidelity.max_seq_length", "500 tokens and prompt tuning's 20 virtual tokens are more than minilm-l6 takes",
         "use 492 or fewer"]),
    "negative learning rate": (lambda d: write_job(d, fidelity={"learning_rate": -1}),
                               ["fidelity.learning_rate", "greater than 0 (it is -1)", "Fix: set it to a value above 0"]),
    "sequences too short": (lambda d: write_job(d, fidelity={"max_seq_length": 2}), ["fidelity.max_seq_length", "8"]),
    "unknown metric": (lambda d: write_job(d, task={"dataset": "rotten_tomatoes", "metric": "bleu"}), ["task.metric", "exact_match"]),
    "unknown task type": (lambda d: write_job(d, task={"dataset": "rotten_tomatoes", "type": "regression"}),
                          ["task.type", "generation", "(it is 'regression')", "use one of the values named"]),
    "trainer without a function": (lambda d: write_job(d, trainer="mytrainer"), ["trainer", "pattern"]),
    "negative trial timeout": (lambda d: write_job(d, budget={"trial_timeout": -5}), ["budget.trial_timeout", "greater than 0"]),
    "zero memory budget": (lambda d: write_job(d, budget={"max_memory_gb": 0}), ["budget.max_memory_gb", "greater than 0"]),
    "retries beyond reason": (lambda d: write_job(d, budget={"max_retries": 1000}),
                              ["budget.max_retries", "(it is 1000)", "Fix: set it to a value of at most 100"]),
    "name with a slash": (lambda d: write_job(d, name="team/search"), ["name", "pattern"]),
    "no text column": (lambda d: write_job(d, task={"dataset": "rotten_tomatoes", "text_columns": []}), ["task.text_columns", "at least 1"]),
    "three text columns": (lambda d: write_job(d, task={"dataset": "rotten_tomatoes", "text_columns": ["a", "b", "c"]}),
                           ["task.text_columns", "at most 2"]),
    "unknown model": (lambda d: write_job(d, model="./no-such-model"), ["model", "no model folder at", "no-such-model"]),
    "unknown baseline": (lambda d: write_job(d, baselines=["lora-r8", "adapterdrop"]), ["baselines", "unknown baseline 'adapterdrop'", "houlsby"]),
    "scores as labels": (lambda d: _labelled(d, [round(0.2 * (i % 26), 1) for i in range(60)]),
                         ["task.label_column", "'gold' holds 26 distinct numbers from 0 to 5, with fractions: a regression target",
                          "a column of their own"]),
    "an id column as labels": (lambda d: _labelled(d, [f"row-{i}" for i in range(60)]),
                               ["task.label_column", "'gold' has 60 distinct labels in 60 examples", "class labels"]),
    "test file without a re-evaluation": (lambda d: _with_test_file(d, "text,gold\nfine,a\n", final={"seeds": 0}),
                                          ["task.test_file is scored by the re-evaluation", "set final.seeds"]),
    "test file with a class the search lacks": (lambda d: _with_test_file(d, "text,gold\nfine,a\nodd,c\nodder,d\n"),
                                                ["task.test_file", "has labels the training and validation data do not: 'c', 'd'",
                                                 "(a, b)"]),
    "test file without the label column": (lambda d: _with_test_file(d, "text,label\nfine,a\n"),
                                           ["task.test_file", "column 'gold' is not in", "text, label"]),
    "missing test file": (lambda d: _with_test_file(d, None), ["task.test_file", "test.csv' does not exist"]),
    "a test file and a test size": (lambda d: write_job(d, task={"dataset": "rotten_tomatoes", "test_file": "t.csv",
                                                                 "test_size": 0.1}, final={"seeds": 2}),
                                    ["task", "at most one of 'test_file'", "'test_size'"]),
    "test size without a re-evaluation": (lambda d: write_job(d, task={"dataset": "rotten_tomatoes", "test_size": 500}),
                                          ["task.test_size is scored by the re-evaluation", "set final.seeds"]),
    "test size of every example": (lambda d: write_job(d, task={"dataset": "rotten_tomatoes", "test_size": 0.99999},
                                                       final={"seeds": 2}),
                                   ["task.test_size", "leaves no train or no test examples"]),
    "two data sources": (lambda d: write_job(d, task={"dataset": "rotten_tomatoes", "train_file": "x.csv"}), ["task", "exactly one of"]),
}


@pytest.mark.parametrize("command", ["submit", "check"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_job_exits_2_with_one_message_and_writes_nothing(tmp_path, capsys, case, command):
    make, words = CASES[case]
    make(tmp_path)
    code, err = run_cli(capsys, command, str(tmp_path / "job.yaml"))
    assert code == 2
    assert err.startswith("autopeft: error: ") and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("network", ["HF_HUB_OFFLINE", "endpoint down", "proxy down"])
def test_a_model_neither_cached_nor_downloadable_is_refused_without_waiting_on_the_hub(tmp_path, capsys, monkeypatch, network):
    port = free_port()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if network == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        why = "HF_HUB_OFFLINE is set"
    elif network == "endpoint down":
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        why = f"127.0.0.1:{port} does not answer (Connection refused)"
    else:
        for name in ("HF_ENDPOINT", "NO_PROXY", "no_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        why = f"127.0.0.1:{port} does not answer (Connection refused)"
    write_job(tmp_path, model="autopeft-tests/never-cached")
    code, err = run_cli(capsys, "check", str(tmp_path / "job.yaml"))
    assert code == 2
    assert err.startswith("autopeft: error: model: 'autopeft-tests/never-cached' is neither a model folder nor a "
                          "Hugging Face id in the local cache, and the hub cannot be reached to download it: ") and why in err, err
    assert len(err.splitlines()) == 1 and "Retrying" not in err, err
    assert_nothing_written(tmp_path)


def test_missing_job_file(tmp_path, capsys):
    code, err = run_cli(capsys, "submit", "absent.yaml")
    assert code == 2 and "job file does not exist" in err
    code, err = run_cli(capsys, "submit", str(tmp_path))
    assert code == 2 and "is a folder, not a job file" in err and "job YAML file" in err


def test_pareto_and_export_before_any_search(tmp_path, capsys):
    job = write_job(tmp_path)
    code, err = run_cli(capsys, "pareto", str(job))
    assert code == 2 and "no search has run for job 't'" in err and "autopeft submit" in err
    code, err = run_cli(capsys, "export", str(job), "--out", "x")
    assert code == 2 and "no search has run" in err
    code, err = run_cli(capsys, "export", str(job), "--pick", "largest", "--out", "x")
    assert code == 2 and "'largest' is not a pick" in err
    assert_nothing_written(tmp_path)


def test_negative_trials_on_the_command_line(tmp_path, capsys):
    job = write_job(tmp_path)
    code, err = run_cli(capsys, "submit", str(job), "--trials", "-5")
    assert code == 2 and "--trials" in err and "-5 is negative" in err
    assert_nothing_written(tmp_path)


def test_export_to_a_file_is_refused(searched, tmp_path, capsys):
    import yaml as _yaml

    target = tmp_path / "taken.txt"
    target.write_text("mine")
    job_file = tmp_path / "job.yaml"
    job_file.write_text(_yaml.safe_dump(searched.model_dump(mode="json")))
    code, err = run_cli(capsys, "export", str(job_file), "--out", str(target))
    assert code == 2 and "is a file" in err and target.read_text() == "mine"
    for bad in ("trial=x", "largest", "smallest-above=abc"):
        code, err = run_cli(capsys, "export", str(job_file), "--pick", bad, "--out", str(tmp_path / "new"))
        assert code == 2 and f"--pick: '{bad}' is not a pick. Fix: use best | knee | smallest-above=<quality>" in err
        assert not (tmp_path / "new").exists()


def test_a_module_in_the_current_folder_never_shadows_an_installed_package(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "optuna.py").write_text("raise SystemExit('the optuna.py of the current folder ran')\n")
    write_job(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for command in ([sys.executable, "-m", "autopeft"], [str(Path(sys.executable).parent / "autopeft")]):
        run = subprocess.run([*command, "pareto", "job.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert "current folder ran" not in run.stderr + run.stdout
        assert run.returncode == 2 and "no search has run" in run.stderr


def test_on_a_one_cpu_machine_a_job_asking_two_workers_is_refused_and_the_demo_runs_one(monkeypatch):
    from autopeft.job.load import load_job
    from autopeft.run import prepare

    monkeypatch.setattr(prepare, "_local_cpus", lambda: 1)
    demo = load_job("demo")
    assert demo.budget.parallel == 2 and prepare.parallel_that_fits(demo) == 1
    with pytest.raises(prepare.UserError, match="budget.parallel 1 or less"):
        prepare._check_resources(demo)
    halves = demo.model_copy(update={"resources": demo.resources.model_copy(update={"cpus": 0.5})})
    assert prepare.parallel_that_fits(halves) == 2
    prepare._check_resources(halves)
