"""One installed namespace: a wheel holds only ``autopeft``; a worker loads none of the driver."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_one_top_level_package_with_workers_spaces_and_dashboards_inside(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(tmp_path.glob("autopeft-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"autopeft"}
    for expected in ("autopeft/workers/methods/lora.py", "autopeft/workers/families/bert.py",
                     "autopeft/search_spaces/lora.yaml", "autopeft/dashboards/pareto_chart.py",
                     "autopeft/job/demo.yaml", "autopeft/optimize/autopeft_sampler/sampler.py"):
        assert expected in names


def test_a_worker_imports_no_driver_module():
    code = ("import sys, autopeft.workers.trial, autopeft.workers.train, autopeft.workers.build; "
            "print(sorted(m for m in sys.modules if m.startswith('autopeft')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    modules = eval(loaded.stdout)
    assert "autopeft.workers.trial" in modules
    driver = [m for m in modules if not m.startswith("autopeft.workers") and m != "autopeft"]
    assert driver == []


def test_bare_top_level_names_are_not_importable_from_an_install():
    code = "import importlib.util as u; print([n for n in ('workers', 'dashboards', 'search_spaces') if u.find_spec(n)])"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert found.stdout.strip() == "[]", found.stdout


def test_the_package_shipped_to_cluster_nodes_imports_on_its_own(tmp_path):
    from autopeft.run.pool import shipped_package

    folder = Path(shipped_package())
    code = ("import autopeft.workers.trial, autopeft.workers.methods, autopeft.dashboards.pareto_chart, importlib.resources as r; "
            "print(autopeft.__file__, r.files('autopeft.search_spaces').joinpath('lora.yaml').is_file())")
    run = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = [{str(folder.parent)!r}] + "
                          f"[p for p in {sys.path!r} if 'site-packages' in p and 'autopeft' not in p]; {code}"],
                         capture_output=True, text=True, timeout=300, cwd="/")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith(str(folder)) and run.stdout.strip().endswith("True")


def test_autopeft_turns_off_mlflow_telemetry_ray_usage_stats_and_hub_kernels_unless_the_user_set_them():
    code = ("import sys; {imports}from mlflow.telemetry.utils import is_telemetry_disabled; "
            "from ray._common.usage.usage_lib import usage_stats_enabled; "
            "from transformers.integrations.hub_kernels import _kernels_enabled; "
            "print(is_telemetry_disabled(), usage_stats_enabled(), _kernels_enabled())")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}  # outside pytest and CI, as a user runs it

    def check(imports: str, **extra) -> str:
        done = subprocess.run([sys.executable, "-c", code.format(imports=imports)], capture_output=True, text=True,
                              timeout=300, cwd="/", env={**env, **extra})
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()

    assert check("") == ["False", "True", "True"]  # what MLflow, Ray and transformers do on their own: report, fetch
    assert check("import autopeft; ") == ["True", "False", "False"]
    assert check("import autopeft; ", MLFLOW_DISABLE_TELEMETRY="false", RAY_USAGE_STATS_ENABLED="1",
                 USE_HUB_KERNELS="YES") == ["False", "True", "True"]


def test_the_command_line_and_the_study_reader_load_neither_peft_nor_torch_and_peft_knows_autopeft_methods_once_imported():
    code = ("import sys; {first}; loaded = [m for m in ('peft', 'torch') if m in sys.modules]; {then}; "
            "from peft.utils import PeftType; from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING; "
            "print(loaded, [t for t in ('BOTTLENECK', 'KV_PREFIX') if PeftType[t] in PEFT_TYPE_TO_CONFIG_MAPPING])")

    def run(first: str, then: str) -> str:
        done = subprocess.run([sys.executable, "-c", code.format(first=first, then=then)], capture_output=True,
                              text=True, timeout=300, cwd="/")
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    assert run("import autopeft.cli, autopeft.record.study", "import importlib.util; importlib.util.find_spec('peft'); import peft") == \
        "[] ['BOTTLENECK', 'KV_PREFIX']"
    assert run("import peft", "import autopeft") == "['peft', 'torch'] ['BOTTLENECK', 'KV_PREFIX']"


def test_the_version_names_autopeft_and_the_libraries_it_runs_on_on_one_line():
    from importlib.metadata import version

    shown = subprocess.run([sys.executable, "-m", "autopeft", "--version"], capture_output=True, text=True, timeout=120,
                           cwd="/", env={"PATH": "/usr/bin:/bin", "COLUMNS": "40"})
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout == (f"autopeft 0.1.0 (peft {version('peft')}, transformers {version('transformers')}, torch "
                            f"{version('torch')}, optuna {version('optuna')}, botorch {version('botorch')}, ray "
                            f"{version('ray')}, mlflow {version('mlflow')})\n")
