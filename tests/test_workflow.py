"""The contributor workflow: the GitHub Actions file is valid and runs what .ci/run runs; pre-commit and `make lint`
run the same checks at the same versions; `make help` lists every command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _workflow() -> dict[str, Any]:
    return _load(WORKFLOW)


def _runs(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def _uploads(job: dict[str, Any]) -> list[str]:
    uploads = [step for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact@")]
    return [step["with"]["path"] for step in uploads]


def _make(*args: str) -> str:
    result = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _check_workflow(path: Path) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_ci_workflow_validates_against_the_github_workflow_schema():
    result = _check_workflow(WORKFLOW)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "validation done" in result.stdout


def test_the_schema_check_rejects_a_job_without_a_runner(tmp_path):
    broken = _workflow()
    del broken["jobs"]["test"]["runs-on"]
    path = tmp_path / "ci.yml"
    path.write_text(yaml.safe_dump(broken))

    result = _check_workflow(path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "jobs" in result.stdout


def _actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "actionlint"), "-no-color", *map(str, paths)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_every_workflow_passes_actionlint():
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
    result = _actionlint(*workflows)

    assert {path.name for path in workflows} >= {"ci.yml", "image.yml"}
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_rejects_an_undefined_step_output(tmp_path):
    broken = _load(ROOT / ".github" / "workflows" / "image.yml")
    broken["jobs"]["image"]["steps"][-1]["env"]["TAGS"] = "${{ steps.nothing.outputs.tags }}"
    path = tmp_path / "image.yml"
    path.write_text(yaml.safe_dump(broken))
    result = _actionlint(path)

    assert result.returncode != 0 and "steps.nothing" in result.stdout


def test_the_image_workflow_builds_the_dockerfile_and_pushes_only_outside_pull_requests():
    job = _load(ROOT / ".github" / "workflows" / "image.yml")["jobs"]["image"]
    (build,) = [step for step in job["steps"] if step.get("uses", "").startswith("docker/build-push-action@")]

    assert build["with"]["context"] == "."
    assert build["with"]["push"] == "${{ github.event_name != 'pull_request' }}"
    assert job["permissions"]["packages"] == "write"


def test_the_stack_test_runs_in_ci_run_and_in_the_workflow():
    steps = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    job = _workflow()["jobs"]["stack-test"]

    assert "make stack-test" in steps and steps.index("make stack-test") > steps.index("make test")
    assert [run for run in _runs(job) if run.startswith("make ")] == ["make install", "make stack-test"]
    assert job["env"]["CI"] == "true"  # no engine there is a failure, never a skip


def test_ci_runs_on_push_and_pull_request():
    workflow = _workflow()
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true

    assert {"push", "pull_request"} <= set(triggers)


def test_the_test_job_has_each_service_with_a_health_check():
    services = _workflow()["jobs"]["test"]["services"]

    assert set(services) >= {"postgres", "redis", "rabbitmq"}
    for name in ("postgres", "redis", "rabbitmq"):
        assert "--health-cmd" in services[name]["options"], name
    env = _workflow()["jobs"]["test"]["env"]
    assert env["TEST_DATABASE_URL"].startswith("postgresql://postgres@127.0.0.1:5432/")
    assert services["postgres"]["env"]["POSTGRES_DB"] == env["TEST_DATABASE_URL"].rsplit("/", 1)[1]
    assert env["REDIS_URL"].startswith("redis://127.0.0.1:6379/")
    assert env["CELERY_BROKER_URL"].startswith("amqp://guest:guest@127.0.0.1:5672/")
    ports = {port for service in services.values() for port in service["ports"]}
    assert ports >= {"5432:5432", "6379:6379", "5672:5672"}


def test_the_test_job_does_what_ci_run_does():
    job = _workflow()["jobs"]["test"]
    ci_run = (ROOT / ".ci" / "run").read_text()
    exported = set(re.findall(r"\b([A-Z_]+)=", " ".join(re.findall(r"^export (.+)$", ci_run, re.M))))
    packages = re.findall(r'"[\w-]+:([\w-]+)"', ci_run)
    runs = _runs(job)

    assert exported - {"CI"} <= set(job["env"]), "variables .ci/run sets that the workflow does not"
    assert job["env"]["REQUIRE_SERVICES"] == "1"
    assert packages and all(package in "\n".join(runs) for package in packages)
    commands = [run for run in runs if run.startswith("make ")]
    assert commands == ["make install", "make lint", "make test"]


def test_the_coverage_report_is_kept_as_an_artifact():
    job = _workflow()["jobs"]["test"]
    report = "\n".join(_runs(job))

    assert "coverage xml" in report and "coverage html" in report
    assert any("coverage.xml" in path and "htmlcov" in path for path in _uploads(job))


def test_the_bench_smoke_job_runs_a_short_benchmark_and_keeps_its_report():
    job = _workflow()["jobs"]["bench-smoke"]

    assert "make bench-smoke" in _runs(job)
    assert any("docs/performance.md" in path for path in _uploads(job))


def test_the_benchmark_smoke_runs_after_the_tests_in_ci_run_and_in_the_workflow():
    steps = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    job = _workflow()["jobs"]["bench-smoke"]

    assert "make bench-smoke" in steps and steps.index("make bench-smoke") > steps.index("make test")
    assert job["needs"] == "test"
    assert [run for run in _runs(job) if run.startswith("make ")] == ["make install", "make bench-smoke"]


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def _hooks() -> list[dict[str, Any]]:
    return [hook for repo in _load(ROOT / ".pre-commit-config.yaml")["repos"] for hook in repo["hooks"]]


def test_pre_commit_config_is_valid():
    command = [str(BIN / "pre-commit"), "validate-config", ".pre-commit-config.yaml"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr


def test_pre_commit_hooks_use_the_versions_requirements_pins():
    pins = _requirements()
    for hook in _hooks():
        assert hook["language"] == "python", hook["id"]
        for dependency in hook.get("additional_dependencies", []):
            name, version = dependency.split("==")
            assert pins.get(name.lower()) == version, f"{hook['id']}: {dependency} is not what requirements.txt pins"


@pytest.mark.parametrize("hook", _hooks(), ids=lambda hook: hook["id"])
def test_make_lint_runs_each_pre_commit_hook(hook):
    # `make lint` checks where the hook may fix: --fix and --force-exclude are the only differences allowed.
    command = " ".join(word for word in hook["entry"].split() if word not in {"--fix", "--force-exclude"})

    assert f"/{command}" in _make("-n", "lint")


def test_make_help_lists_every_command():
    makefile = (ROOT / "Makefile").read_text()
    phony = {name for line in re.findall(r"^\.PHONY:(.*)$", makefile, re.M) for name in line.split()}
    listed = set(re.findall(r"^\s+make (\S+)\s+\S", _make("help"), re.M))

    assert {"help", "install", "run", "test", "lint", "format"} <= listed
    assert phony <= listed, f"targets without a `## help` line: {sorted(phony - listed)}"
