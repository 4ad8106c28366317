"""Run configuration: strict keys, safe YAML, overrides, and the result hash."""

from pathlib import Path

import pytest

from pipelines.schema import ConfigError, load_config

BASE = """
data: {path: d.zarr}
model: {n_components: [1, 2]}
output: {path: out}
"""


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (BASE + "modle: {}\n", r"unknown key 'modle'; did you mean 'model'\?"),
        (
            BASE.replace("{n_components: [1, 2]}", "{n_components: [1], covariance_typs: [full]}"),
            r"model: unknown key 'covariance_typs'; did you mean 'covariance_types'\?",
        ),
        (BASE.replace("[1, 2]", "[]"), "model.n_components: the list of K is empty"),
        (BASE.replace("[1, 2]", "[0, 2]"), "every K must be >= 1"),
        (BASE.replace("[1, 2]", "[1, 2], tol: -1"), "model.tol: Input should be greater than"),
        (BASE.replace("[1, 2]", "[1, 2], n_init: two"), "model.n_init: Input should be a valid"),
        (BASE + "data: {path: other.zarr}\n", "duplicate key 'data' at line 5"),
        ("data: !!python/object/apply:os.system ['true']\n", "uses the Python tag"),
        ("data: [unclosed\n", "is not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping"),
        (BASE.replace("output: {path: out}", ""), "output: required key is missing"),
        (BASE + "cluster: {type: kubernetes}\n", "cluster"),
    ],
)
def test_bad_configs(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(_write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_defaults_range_and_overrides(tmp_path):
    p = _write(tmp_path, BASE.replace("[1, 2]", "{start: 2, stop: 6, step: 2}"))
    cfg = load_config(p)
    assert cfg.model.n_components == [2, 4, 6]
    assert cfg.model.covariance_types == ["full"] and cfg.selection.criterion == "bic"
    assert cfg.cluster.type == "local" and cfg.cluster.host == "127.0.0.1"
    assert cfg.cluster.dashboard_address.startswith("127.0.0.1:")
    cfg2 = load_config(p, ["model.n_init=3", "selection.criterion=aic"])
    assert cfg2.model.n_init == 3 and cfg2.selection.criterion == "aic"
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(p, ["model.n_init"])


def test_hash_tracks_the_result_not_the_cluster(tmp_path):
    p = _write(tmp_path, BASE)
    h = load_config(p).result_hash()
    assert load_config(p, ["cluster.n_workers=7", "output.overwrite=true"]).result_hash() == h
    assert load_config(p, ["model.tol=0.01"]).result_hash() != h
    assert load_config(p, ["data.path=x.zarr"]).result_hash() != h


@pytest.mark.parametrize("name", ["demo.yaml", "scheduler.yaml", "slurm.yaml", "pbs.yaml"])
def test_shipped_configs_are_valid(name):
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
    assert cfg.model.n_components
    assert cfg.cluster.type in ("local", "address", "slurm", "pbs")


@pytest.mark.parametrize(
    ("name", "directives"),
    [
        (
            "slurm.yaml",
            [
                "#SBATCH -p normal",
                "#SBATCH -A myproject",
                "#SBATCH -t 04:00:00",
                "--cpus-per-task=8",
            ],
        ),
        ("pbs.yaml", ["#PBS -q workq", "#PBS -l walltime=02:00:00", "ncpus=16"]),
    ],
)
def test_shipped_jobqueue_configs_render_their_job_scripts(name, directives):
    """What a batch run would submit, rendered by dask-jobqueue itself (no queue needed):
    the resources of the config, and a worker command with its memory limit and dgmm's
    worker preload."""
    import re
    import shlex
    from pathlib import Path

    from pipelines.cluster import jobqueue_cluster

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / name).cluster
    with jobqueue_cluster(cfg) as cluster:
        script = cluster.job_script()
    for line in directives:
        assert line in script, script
    command = shlex.split(next(ln for ln in script.splitlines() if "dask_worker" in ln))
    opts = cfg.options
    assert command[command.index("--nthreads") + 1] == str(opts["cores"] // opts["processes"])
    assert command[command.index("--nworkers") + 1] == str(opts["processes"])
    assert command[command.index("--preload") + 1] == "dgmm.worker"
    memory = re.findall(r"--memory-limit[ =](\S+)", script)
    expected = opts.get("worker_extra_args", [])
    if "--memory-limit" in expected:  # the config's own limit wins over jobqueue's share
        assert memory[-1] == expected[expected.index("--memory-limit") + 1]
    else:
        assert memory, script


def test_version_flag_prints_the_package_version(capsys):
    import dgmm
    from pipelines.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"dgmm {dgmm.__version__}"


def test_jobqueue_workers_keep_the_sites_worker_arguments():
    """Worker arguments from the site's jobqueue settings survive the added preload."""
    import dask

    from pipelines.cluster import jobqueue_cluster
    from pipelines.schema import JobqueueClusterConfig

    cfg = JobqueueClusterConfig(type="pbs", options={"cores": 2, "memory": "4GB"})
    with dask.config.set({"jobqueue.pbs.worker-extra-args": ["--lifetime", "55m"]}):
        with jobqueue_cluster(cfg) as cluster:
            script = cluster.job_script()
    assert "--lifetime 55m" in script and "--preload dgmm.worker" in script, script


def test_the_schema_takes_its_choices_from_the_library():
    """One vocabulary: the config's choices are the library's option tuples."""
    from dgmm.covariance import COVARIANCE_TYPES
    from dgmm.options import (
        COVARIANCE_TYPE_NAMES,
        CRITERIA,
        INIT_METHODS,
        METHODS,
        STRATEGIES,
        WEIGHT_PRIOR_TYPES,
    )
    from pipelines.schema import ModelConfig, SelectionConfig

    assert tuple(COVARIANCE_TYPES) == COVARIANCE_TYPE_NAMES
    props = ModelConfig.model_json_schema()["properties"]
    assert tuple(props["covariance_types"]["items"]["enum"]) == COVARIANCE_TYPE_NAMES
    assert tuple(props["init"]["enum"]) == INIT_METHODS
    assert tuple(props["strategy"]["enum"]) == STRATEGIES
    sel = SelectionConfig.model_json_schema()
    assert tuple(sel["properties"]["criterion"]["enum"]) == CRITERIA
    assert tuple(sel["properties"]["method"]["enum"]) == METHODS
    prior = next(iter(sel["$defs"].values()))["properties"]
    assert tuple(prior["weight_concentration_prior_type"]["enum"]) == WEIGHT_PRIOR_TYPES


def test_dgmm_init_writes_a_valid_config_whose_stated_defaults_are_the_schemas(tmp_path, capsys):
    """`dgmm init`: a new file only, valid as written, every key it shows (set or commented)
    a key of the schema, and every value it sets the schema's default (but the paths and K)."""
    import re

    import yaml

    from pipelines.cli import main
    from pipelines.schema import RunConfig, load_config

    out = tmp_path / "conf" / "run.yaml"
    assert main(["init", str(out), "--data", str(tmp_path / "my data #1.csv")]) == 0
    cfg = load_config(out)
    assert cfg.data.path == str(tmp_path / "my data #1.csv")
    raw = yaml.safe_load(out.read_text())
    sections = {name: field.annotation for name, field in RunConfig.model_fields.items()}
    defaults = RunConfig.model_validate(
        {"data": {"path": "x"}, "model": {"n_components": [1]}, "output": {"path": "y"}}
    )
    for section, values in raw.items():
        assert section in sections, section
        dumped = getattr(defaults, section).model_dump(mode="json")
        for key, value in values.items():
            assert key in dumped, (section, key)
            if (section, key) not in {
                ("data", "path"),
                ("output", "path"),
                ("model", "n_components"),
            }:
                assert value == dumped[key], (section, key, value, dumped[key])
    current = None
    for line in out.read_text().splitlines():
        if re.match(r"^[a-z]+:", line):
            current = line.split(":")[0]
        commented = re.match(r"^  # ([a-z_]+):", line)
        if commented:  # an option shown commented out is a key of its section
            assert commented[1] in type(getattr(defaults, current)).model_fields, line
    before = out.read_text()
    assert main(["init", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--data", "/d/a: b: c"], None),  # YAML-looking paths are written quoted
        (["--data", "x #1: y.csv", "--output", "o: p"], None),
        (["--output", ""], "--output"),
    ],
)
def test_dgmm_init_takes_any_path_or_refuses_in_one_line(tmp_path, capsys, args, needle):
    from pipelines.cli import main
    from pipelines.schema import load_config

    out = tmp_path / "run.yaml"
    status = main(["init", str(out), *args])
    err = capsys.readouterr().err
    if needle is None:
        assert status == 0, err
        cfg = load_config(out)
        assert cfg.data.path.endswith(args[1].lstrip("/").split("/")[-1]), cfg.data.path
    else:
        assert status == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_dgmm_init_example_writes_each_shipped_config_as_it_is(tmp_path, capsys):
    """`dgmm init --example NAME` writes the shipped example byte for byte (a valid config),
    and like the starter never replaces a file."""
    from pipelines.cli import EXAMPLES, main
    from pipelines.schema import load_config

    root = Path(__file__).resolve().parents[1]
    assert sorted(EXAMPLES) == sorted(p.stem for p in (root / "configs").glob("*.yaml"))
    for name in EXAMPLES:
        out = tmp_path / f"{name}.yaml"
        assert main(["init", str(out), "--example", name]) == 0
        assert out.read_bytes() == (root / "configs" / f"{name}.yaml").read_bytes()
        load_config(out)
        assert main(["init", str(out), "--example", name]) == 2
    assert "exists" in capsys.readouterr().err
