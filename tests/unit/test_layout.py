"""The source layout keeps Python's standard `platform` module importable everywhere we run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECK = "import platform, sys; assert platform.system(), 'empty'; print(platform.system(), platform.__file__)"


def run(args, cwd, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra_env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def assert_stdlib_platform(result):
    assert result.returncode == 0, result.stderr
    system, path = result.stdout.split()[:2]
    assert system == "Linux" and Path(path).parent.name.startswith("python3"), result.stdout


def test_no_init_directly_in_platform_folder():
    assert not (REPO / "platform" / "__init__.py").exists()
    assert (REPO / "platform" / "ultrachat" / "__init__.py").is_file()


def test_stdlib_platform_from_repo_root():
    assert_stdlib_platform(run(["-c", CHECK], cwd=REPO))


def test_stdlib_platform_with_repo_root_and_source_folder_on_pythonpath():
    # What a `ray job submit --working-dir .` process sees: the working dir on sys.path, plus
    # jobs/_bootstrap.py adding platform/.
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'platform'}"}
    assert_stdlib_platform(run(["-c", CHECK + "; import ultrachat"], cwd=REPO, extra_env=env))


def test_job_entrypoint_in_a_copied_working_dir_uses_that_copy(tmp_path):
    # Ray unpacks the working dir somewhere else; the job must import that copy of ultrachat.
    work = tmp_path / "working_dir"
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".venv", ".git", "outputs", "__pycache__"))
    probe = work / "jobs" / "probe.py"
    probe.write_text("import _bootstrap, platform, ultrachat\n"
                     "print(platform.system(), platform.__file__)\nprint(ultrachat.__file__)\n")
    result = run([str(probe)], cwd=work)
    assert_stdlib_platform(result)
    assert result.stdout.splitlines()[1].startswith(str(work / "platform" / "ultrachat"))
