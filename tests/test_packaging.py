"""The distribution a user installs: a wheel and an sdist that build, pass ``twine check``, and
carry the license (PEP 639 metadata), the type marker, the command and the example configs; the
wheel installed in a fresh virtual environment runs the demo."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """The wheel and the sdist of the working tree."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return next(out.glob("dgmm-*.whl")), next(out.glob("dgmm-*.tar.gz"))


def test_wheel_and_sdist_build_and_pass_twine_check(built):
    wheel, sdist = built
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        metadata = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = whl.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "dgmm/py.typed" in names
    assert "pipelines/starter.yaml" in names  # `dgmm init` writes it
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: BSD-3-Clause" in metadata
    assert "dgmm = pipelines.cli:main" in entry_points
    assert not any(n.startswith("tests/") for n in names)
    for config in sorted((ROOT / "configs").glob("*.yaml")):  # `dgmm init --example` writes them
        with zipfile.ZipFile(wheel) as whl:
            assert whl.read(f"pipelines/configs/{config.name}") == config.read_bytes()


def test_the_wheel_in_a_fresh_environment_runs_the_demo(built, tmp_path):
    """A new virtual environment with only the wheel installed (its dependencies are this
    environment's, reached through a path file, without this checkout's editable install)."""
    wheel, _ = built
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = Path(
        subprocess.run(
            [
                env / "bin" / "python",
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    work = tmp_path / "work"
    work.mkdir()

    def dgmm(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [env / "bin" / "python", "-m", "dgmm", *args],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
        )

    where = subprocess.run(
        [
            env / "bin" / "python",
            "-c",
            "import dgmm, pipelines; print(dgmm.__file__, pipelines.__file__)",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.count(str(site)) == 2, where  # the wheel's files, not this checkout's
    made = dgmm("init", "demo.yaml", "--example", "demo")
    assert made.returncode == 0, made.stderr
    ran = dgmm(
        "run",
        "demo.yaml",
        "--set",
        "data.generate.n_samples=20000",
        "--set",
        "model.n_components={start: 1, stop: 5}",
        "--set",
        "cluster.dashboard_address=null",
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert (work / "demo-output" / "run" / "dgmm.json").is_file()
    assert "selected" in ran.stdout.lower() or "K=" in ran.stdout, ran.stdout[-2000:]
