"""`nbworker deploy` and `%rp_deploy` against a local stand-in for RunPod's API
(tests/api_standin.py, a real HTTP server on 127.0.0.1 that records each request).

The plan, the dry run and every refusal run in this process (no runpod import: nothing is
sent). The deployments run the real runpod SDK in a subprocess (`python -m nbworker.cli
deploy`), pointed at the stand-in with RUNPOD_API_BASE_URL; the replay goes through the
stand-in's endpoint API to a real exported worker served by the SDK. What RunPod itself
would say to these calls is not tested here: only that the SDK is called as meant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
from api_standin import NO_WORKER, READY, ApiStandIn, health_with, sdk_worker_server
from helpers import ROOT

from nbworker import cli, deploy
from nbworker.errors import DeployError, DeployRefused, EndpointUnhealthy

KEY = "rpa_STANDINKEY0123456789abcdefghijklmn"  # pragma: allowlist secret
HF_LITERAL = "hf_abcdefghijklmnopqrstuvwxyzABCDEF12"  # pragma: allowlist secret
IMAGE = "docker.io/someone/worker:1.0"
RP2 = ROOT / ".venv-rp2" / "bin" / "python"
# runpod 1.12 calls RunPod's GraphQL API, 2.0 its REST API (the stand-in answers both): the
# GraphQL tests run under 1.12 (scripts/test.sh), the REST one under 2.0 wherever it is found.
RUNPOD_2 = int(metadata.version("runpod").split(".")[0]) >= 2
graphql_sdk = pytest.mark.skipif(RUNPOD_2, reason="runpod 2 calls the REST API (see below)")
REST_PYTHON = Path(sys.executable) if RUNPOD_2 else RP2
HUB = {
    "title": "Worker",
    "type": "serverless",
    "category": "language",
    "config": {
        "runsOn": "GPU",
        "gpuIds": "ADA_24,AMPERE_24",
        "gpuCount": 1,
        "containerDiskInGb": 20,
        "allowedCudaVersions": ["12.4", "12.5"],
        "env": [
            {
                "key": "MODEL_NAME",
                "input": {"name": "MODEL_NAME", "type": "string", "default": "small"},
            },
            {"key": "HF_TOKEN", "input": {"name": "HF_TOKEN", "type": "string"}},
            {"key": "BATCH", "input": {"name": "BATCH", "type": "string"}},
        ],
    },
}


@pytest.fixture
def worker(tmp_path: Path) -> Path:
    """A worker folder as export writes it, as far as deploy reads it."""
    folder = tmp_path / "my-worker"
    (folder / ".runpod").mkdir(parents=True)
    (folder / "handler.py").write_text("import runpod\n")
    (folder / ".runpod" / "hub.json").write_text(json.dumps(HUB))
    return folder


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch):
    with ApiStandIn(key=KEY) as standin:
        for name, value in standin.env().items():
            monkeypatch.setenv(name, value)
        yield standin


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """`nbworker deploy ARGS` in this process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(["deploy", *args])
    except SystemExit as exit_:  # argparse's own errors (cli._Parser): exit 2 too
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _cli(args: list[str], env: dict[str, str], *, python: Path | str = sys.executable):
    """`nbworker deploy ARGS` in a process of its own (the real SDK, imported there)."""
    return subprocess.run(
        [str(python), "-m", "nbworker.cli", "deploy", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


# ------------------------------------------------------------------------ the dry run


def test_the_dry_run_prints_each_call_and_sends_nothing(api, worker, capsys) -> None:
    code, out, err = _main(
        capsys, str(worker), "--image", IMAGE, "--secret", "HF_TOKEN=hf_token", "--env",
        "BATCH=8", "--workers-max", "5", "--idle-timeout", "30", "--dry-run",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert api.requests == []
    assert "(dry run: nothing is sent)" in out
    assert "1. runpod.api.ctl_commands.create_template(" in out
    assert f"image_name={IMAGE!r}" in out
    assert "'HF_TOKEN': '{{ RUNPOD_SECRET_hf_token }}'" in out
    assert "'BATCH': '8'" in out and "'MODEL_NAME': 'small'" in out  # hub.json's default
    assert "container_disk_in_gb=20," in out and "is_serverless=True," in out
    assert "2. runpod.api.ctl_commands.create_endpoint(" in out
    assert "template_id='<the id create_template answers>'," in out
    assert "gpu_ids='ADA_24,AMPERE_24'," in out and "allowed_cuda_versions='12.4,12.5'," in out
    assert "workers_min=0," in out and "workers_max=5," in out and "idle_timeout=30," in out
    assert "env HF_TOKEN: the RunPod secret 'hf_token'" in out
    assert KEY not in out and "RUNPOD_API_KEY set" in out


def test_the_dry_run_needs_no_key_and_imports_no_sdk(worker: Path) -> None:
    code = (
        "import sys\nfrom nbworker import cli\n"
        f"code = cli.main(['deploy', {str(worker)!r}, '--image', {IMAGE!r}, '--dry-run'])\n"
        "print('runpod' in sys.modules, code)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "RUNPOD_API_KEY not set (needed to deploy)" in done.stdout
    assert done.stdout.strip().endswith("False 0")


def test_an_update_plans_a_check_a_template_and_the_update(api, worker, capsys) -> None:
    code, out, _ = _main(capsys, str(worker), "--image", IMAGE, "--endpoint", "abc123", "--dry-run")
    assert code == 0 and api.requests == []
    calls = [line for line in out.splitlines() if "runpod.api.ctl_commands." in line]
    assert calls == [
        "1. runpod.api.ctl_commands.get_endpoints()",
        "2. runpod.api.ctl_commands.create_template(",
        "3. runpod.api.ctl_commands.update_endpoint_template(",
    ]
    assert "endpoint_id='abc123'," in out and "create_endpoint" not in out


def test_hub_json_gives_defaults_and_warns_of_what_nothing_gives(worker: Path) -> None:
    plan = deploy.plan_deployment(worker, image=IMAGE, test=False)
    assert plan.template.env == {"MODEL_NAME": "small"}
    assert plan.endpoint is not None and plan.endpoint.gpu_ids == "ADA_24,AMPERE_24"
    warned = [w for w in plan.warnings if "nothing gives it" in w]
    assert warned == [
        "the worker reads HF_TOKEN (hub.json) and nothing gives it: --secret HF_TOKEN=NAME",
        "the worker reads BATCH (hub.json) and nothing gives it: --env BATCH=VALUE",
    ]
    given = deploy.plan_deployment(
        worker, image=IMAGE, gpu_ids=["NVIDIA GeForce RTX 4090"], env={"MODEL_NAME": "big"}
    )
    assert given.endpoint is not None and given.endpoint.gpu_ids == "NVIDIA GeForce RTX 4090"
    assert given.template.env["MODEL_NAME"] == "big"


def test_a_cpu_worker_needs_a_gpu_to_deploy(worker: Path) -> None:
    (worker / ".runpod" / "hub.json").write_text(json.dumps({"config": {"runsOn": "CPU"}}))
    with pytest.raises(DeployError, match=r"runs on CPU.*give --gpu ID"):
        deploy.plan_deployment(worker, image=IMAGE)
    plan = deploy.plan_deployment(worker, image=IMAGE, gpu_ids=["AMPERE_16"])
    assert plan.endpoint is not None and plan.endpoint.gpu_ids == "AMPERE_16"


# ------------------------------------------------------------------------ refusals

HOSTILE = [
    (["--image", "someone/worker :1.0"], "--image 'someone/worker :1.0': not an image reference"),
    (["--image", "someone/worker\n:1.0"], "not an image reference"),
    (["--image", 'someone/w"x'], "not an image reference"),
    (["--image", "Someone/Worker"], "not an image reference"),
    (["--env", "=x"], "--env '=x': write KEY=VALUE"),
    (["--env", "NOEQUALS"], "--env 'NOEQUALS': write KEY=VALUE"),
    (["--env", "1X=a"], "--env '1X': '1X' is not valid (a variable name"),
    (["--env", f"HF_TOKEN={HF_LITERAL}"], "--env HF_TOKEN: a secret's value is never sent"),
    (["--env", f"MODEL_REPO={HF_LITERAL}"], "--env MODEL_REPO: a secret's value is never sent"),
    (["--env", "DB_PASSWORD=hunter2"], "--secret DB_PASSWORD=SECRET_NAME"),
    (["--env", "DB=https://user:pass@db.example.com/x"], "--env DB: a secret's value"),
    (["--env", 'X=a"b'], "--env X: the SDK cannot send '\"'"),
    (["--env", "X=a\nb"], "--env X: the SDK cannot send '\\n'"),
    (["--env", "X=1", "--env", "X=2"], "--env X: given twice"),
    (["--env", "HF_TOKEN=x", "--secret", "HF_TOKEN=hf"], "--env HF_TOKEN: given as --secret too"),
    (["--secret", "HF_TOKEN=bad name"], "--secret HF_TOKEN: 'bad name' is not valid"),
    (["--secret", "HF_TOKEN=a}} {{b"], "is not valid (letters, digits, '_', '-')"),
    (["--secret", f"HF_TOKEN={HF_LITERAL}"], "that looks like the secret itself"),
    (["--secret", "X-Y=name"], "--secret 'X-Y': 'X-Y' is not valid"),
    (["--workers-min", "3", "--workers-max", "1"], "--workers-min 3 is more than --workers-max 1"),
    (["--workers-min", "-1"], "--workers-min must be a whole number >= 0, not -1"),
    (["--workers-max", "0"], "--workers-max must be a whole number >= 1, not 0"),
    (["--idle-timeout", "-5"], "--idle-timeout must be a whole number >= 1, not -5"),
    (["--idle-timeout", "0"], "--idle-timeout must be a whole number >= 1, not 0"),
    (["--gpu-count", "0"], "--gpu-count must be a whole number >= 1, not 0"),
    (["--gpu", 'A"B'], "--gpu: 'A\"B' is not valid"),
    (["--gpu", "ADA_24,,AMPERE_24"], "--gpu: '' is not valid"),
    (["--wait", "0"], "--wait must be positive, not 0"),
    (["--timeout", "-1"], "--timeout must be positive, not -1"),
    (["--name", "my endpoint"], "--name: 'my endpoint' is not valid"),
    (["--endpoint", "../x"], "--endpoint: '../x' is not valid"),
    (
        ["--endpoint", "abc", "--workers-max", "5"],
        "--workers-max: with --endpoint only the template",
    ),
    (["--workers-min", "x"], "argument --workers-min: invalid int value: 'x'"),
]


@pytest.mark.parametrize(("args", "message"), HOSTILE, ids=[repr(a) for a, _ in HOSTILE])
def test_hostile_input_is_one_line_exit_2_and_sends_nothing(
    api, worker, capsys, args: list[str], message: str
) -> None:
    given = args if "--image" in args else ["--image", IMAGE, *args]
    code, out, err = _main(capsys, str(worker), "--no-test", "--wait", "1", *given)
    assert code == 2, (out, err)
    assert err.startswith("nbworker deploy: error: ") and err.count("\n") == 1, err
    assert message in err
    assert HF_LITERAL not in err + out and "hunter2" not in err + out
    assert api.requests == []


def test_a_key_with_equals_and_a_source_that_is_no_worker_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    with pytest.raises(DeployError, match=r"a folder without handler\.py is no worker folder"):
        deploy.plan_deployment(folder, image=IMAGE)
    (folder / "handler.py").write_text("")
    with pytest.raises(DeployError, match=r"--env 'A=B': 'A=B' is not valid"):
        deploy.plan_deployment(folder, image=IMAGE, env={"A=B": "x"})
    with pytest.raises(DeployError, match="no such notebook or worker folder"):
        deploy.plan_deployment(tmp_path / "nothing", image=IMAGE)
    (folder / ".runpod").mkdir()
    (folder / ".runpod" / "hub.json").write_text("{not json")
    with pytest.raises(DeployError, match=r"hub\.json: cannot read it as JSON"):
        deploy.plan_deployment(folder, image=IMAGE)


def test_deploying_without_a_key_sends_nothing(api, worker, capsys, monkeypatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY")
    code, _, err = _main(capsys, str(worker), "--image", IMAGE, "--no-test")
    assert code == 2 and "RUNPOD_API_KEY is not set" in err and api.requests == []


# ------------------------------------------------------------------------ %rp_deploy


def test_rp_deploy_dry_run_in_a_shell(shell, api, worker, monkeypatch) -> None:
    result = shell.ok(f"%rp_deploy {worker} --image {IMAGE} --secret HF_TOKEN=hf_token --dry-run")
    out = result.captured.stdout
    assert "runpod.api.ctl_commands.create_template(" in out
    assert "'HF_TOKEN': '{{ RUNPOD_SECRET_hf_token }}'" in out and api.requests == []
    assert (
        shell.usage_error(f"%rp_deploy {worker} --image {IMAGE} --workers-min 4 --workers-max 2")
        == "%rp_deploy: --workers-min 4 is more than --workers-max 2"
    )
    assert "the following arguments are required: --image" in shell.usage_error(
        f"%rp_deploy {worker} --dry-run"
    )
    assert shell.usage_error(
        f"%rp_deploy {worker} --image {IMAGE} --env HF_TOKEN={HF_LITERAL}"
    ) == (
        "%rp_deploy: --env HF_TOKEN: a secret's value is never sent as one; make it a RunPod "
        "secret and pass --secret HF_TOKEN=SECRET_NAME"
    )
    monkeypatch.delenv("RUNPOD_API_KEY")
    assert shell.usage_error(f"%rp_deploy {worker} --image {IMAGE} --no-test") == (
        "%rp_deploy: RUNPOD_API_KEY is not set: the SDK calls need your RunPod API key"
    )
    assert api.requests == []


# ------------------------------------------------------------------------ the wait


def test_the_health_wait_is_bounded_and_says_what_it_saw(api) -> None:
    api.endpoints["ep9"] = {"id": "ep9", "workersMin": 1}
    api.health = lambda _id, _n: health_with(NO_WORKER)
    heard: list[str] = []
    started = time.monotonic()
    with pytest.raises(EndpointUnhealthy) as info:
        deploy.wait_until_healthy(
            "ep9", workers_min=1, wait=0.6, poll_interval=0.1, on_progress=heard.append, api_key=KEY
        )
    assert time.monotonic() - started < 5
    assert str(info.value).startswith("endpoint ep9 is not healthy after 0.6s (workers: idle 0, ")
    assert info.value.health is not None and info.value.health["workers"]["initializing"] == 1
    assert len(heard) >= 2 and all(h.startswith("waiting for a worker of ep9: ") for h in heard)


def test_the_wait_ends_when_a_worker_is_ready(api) -> None:
    api.endpoints["ep9"] = {"id": "ep9"}
    api.health = lambda _id, polls: health_with(READY if polls >= 3 else NO_WORKER)
    heard: list[str] = []
    health = deploy.wait_until_healthy(
        "ep9", workers_min=1, wait=30, poll_interval=0.05, on_progress=heard.append, api_key=KEY
    )
    assert health["workers"]["ready"] == 1 and api.polls["ep9"] == 3
    assert heard[-1].startswith("endpoint ep9 is healthy (idle 1, ")
    # with workers min 0 an answer is enough: no worker runs before a job comes
    api.polls.clear()
    deploy.wait_until_healthy("ep9", workers_min=0, wait=30, poll_interval=0.05, api_key=KEY)
    assert api.polls["ep9"] == 1


def test_a_refused_key_on_health_is_a_refusal_not_a_wait(api) -> None:
    api.endpoints["ep9"] = {"id": "ep9"}
    with pytest.raises(DeployRefused, match="HTTP 401"):
        deploy.wait_until_healthy("ep9", workers_min=0, wait=30, api_key="rpa_wrong")


# ------------------------------------------------------------------------ deploying (SDK)


@pytest.mark.slow
@graphql_sdk
def test_a_deploy_sends_the_mutations_with_the_fields_and_the_key(api, worker) -> None:
    done = _cli(
        [str(worker), "--image", IMAGE, "--secret", "HF_TOKEN=hf_token", "--env", "BATCH=8",
         "--gpu", "AMPERE_80", "--gpu=-NVIDIA A100 80GB PCIe", "--workers-min", "1",
         "--workers-max", "4", "--idle-timeout", "60", "--no-test", "--wait", "10"],
        api.env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    calls = api.api_calls()
    assert [c.operation for c in calls] == ["saveTemplate", "saveEndpoint"]
    assert {c.headers["authorization"] for c in api.requests} == {f"Bearer {KEY}"}
    template, endpoint = calls[0].fields, calls[1].fields
    assert template["imageName"] == IMAGE and template["isServerless"] is True
    assert template["containerDiskInGb"] == 20
    assert template["env"] == [
        {"key": "HF_TOKEN", "value": "{{ RUNPOD_SECRET_hf_token }}"},
        {"key": "BATCH", "value": "8"},
        {"key": "MODEL_NAME", "value": "small"},
    ]
    assert template["name"].startswith("my-worker-")
    assert endpoint["templateId"] == next(iter(api.templates))
    assert endpoint["gpuIds"] == "AMPERE_80,-NVIDIA A100 80GB PCIe"
    assert (endpoint["workersMin"], endpoint["workersMax"], endpoint["idleTimeout"]) == (1, 4, 60)
    assert endpoint["flashBootType"] == "FLASHBOOT" and endpoint["scalerType"] == "QUEUE_DELAY"
    assert endpoint["allowedCudaVersions"] == "12.4,12.5" and endpoint["name"] == "my-worker"
    endpoint_id = next(e for e in api.endpoints if e != "existing1")
    assert [r.path for r in api.requests[2:]] == [f"/ep/{endpoint_id}/health"]
    assert f"created endpoint {endpoint_id}: template my-worker-" in done.stdout
    assert f"created endpoint my-worker ({endpoint_id})" in done.stderr
    assert KEY not in done.stdout + done.stderr


@pytest.mark.slow
@graphql_sdk
def test_an_update_checks_the_endpoint_then_points_it_at_a_new_template(api, worker) -> None:
    done = _cli([str(worker), "--image", IMAGE, "--endpoint", "existing1", "--no-test"], api.env())
    assert done.returncode == 0, done.stderr
    calls = api.api_calls()
    assert [c.operation for c in calls] == ["myself", "saveTemplate", "updateEndpointTemplate"]
    new = next(iter(api.templates))
    assert calls[2].fields == {"templateId": new, "endpointId": "existing1"}
    assert api.endpoints["existing1"]["templateId"] == new
    assert "updated endpoint existing1" in done.stdout
    # an endpoint the account does not have: refused before any template is made
    api.requests.clear()
    gone = _cli([str(worker), "--image", IMAGE, "--endpoint", "nope42", "--no-test"], api.env())
    assert gone.returncode == deploy.EXIT_REFUSED
    assert gone.stderr.startswith(
        "nbworker deploy: error: get_endpoints: this account has no endpoint nope42 (it has: "
        "existing1"
    )
    assert [c.operation for c in api.api_calls()] == ["myself"]


@pytest.mark.slow
def test_no_healthy_endpoint_by_the_wait_is_one_line_and_exit_6(api, worker) -> None:
    api.health = lambda _id, _n: health_with(NO_WORKER)
    started = time.monotonic()
    done = _cli(
        [str(worker), "--image", IMAGE, "--workers-min", "1", "--wait", "1", "--no-test"],
        api.env(),
    )
    assert time.monotonic() - started < 60
    assert done.returncode == deploy.EXIT_UNHEALTHY, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("nbworker deploy: error: endpoint ep2 is not healthy after 1s (")
    assert "Traceback" not in done.stderr


API_FAILURES = [
    ("fail_status", 401, "create_template: RunPod refused the API key: Unauthorized request"),
    (
        "graphql_errors",
        "Template name must be unique",
        "create_template: RunPod's API answered an error: Template name must be unique",
    ),
    ("fail_status", 500, "create_template: an answer the SDK cannot read (KeyError: 'data')"),
    ("base", "http://127.0.0.1:1", "create_template: cannot reach http://127.0.0.1:1"),
    (
        "page",
        (502, b"<html><title>502 Bad Gateway</title></html>"),
        "create_template: the API answered something that is not JSON",
    ),
]


@pytest.mark.slow
@graphql_sdk
@pytest.mark.parametrize(
    ("what", "value", "message"), API_FAILURES, ids=[str(v)[:20] for _, v, _ in API_FAILURES]
)
def test_api_failures_are_one_line_and_exit_4(api, worker, what, value, message) -> None:
    env = api.env()
    if what == "base":
        env["RUNPOD_API_BASE_URL"] = value
    else:
        setattr(api, what, value)
    done = _cli([str(worker), "--image", IMAGE, "--no-test"], env)
    assert done.returncode == deploy.EXIT_REFUSED, done.stderr
    assert done.stderr.startswith(f"nbworker deploy: error: {message}"), done.stderr
    assert done.stderr.count("\n") == 1 and KEY not in done.stdout + done.stderr


@pytest.mark.slow
@graphql_sdk
def test_an_endpoint_refused_after_its_template_says_the_template_was_made(api, worker) -> None:
    api.refuse["saveEndpoint"] = "There are no longer any instances available"
    done = _cli([str(worker), "--image", IMAGE, "--no-test"], api.env())
    assert done.returncode == deploy.EXIT_REFUSED, done.stderr
    (template,) = api.templates
    assert done.stderr.splitlines()[-1] == (
        "nbworker deploy: error: create_endpoint: RunPod's API answered an error: There are no "
        f"longer any instances available (template {template} was made before this failed)"
    )


@pytest.mark.slow
@pytest.mark.skipif(not REST_PYTHON.exists(), reason="no .venv-rp2 (runpod 2.0)")
def test_runpod_2_makes_the_same_calls_over_its_rest_api(api, worker) -> None:
    done = _cli(
        [str(worker), "--image", IMAGE, "--secret", "HF_TOKEN=hf_token", "--workers-max", "4",
         "--gpu=ADA_24,-NVIDIA L4", "--no-test"],
        api.env(),
        python=REST_PYTHON,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    calls = api.api_calls()
    assert [c.operation for c in calls] == ["POST /v2/templates", "POST /v2/serverless"]
    template, endpoint = calls[0].fields, calls[1].fields
    assert template["image"] == IMAGE and template["serverless"] is True
    assert template["env"]["HF_TOKEN"] == "{{ RUNPOD_SECRET_hf_token }}"
    assert endpoint["gpu"]["pools"] == ["ADA_24"] and endpoint["gpu"]["excludedTypes"] == [
        "NVIDIA L4"
    ]
    assert endpoint["workers"] == {"min": 0, "max": 4, "idleTimeout": 5}
    assert {c.headers["authorization"] for c in calls} == {f"Bearer {KEY}"}
    update = _cli(
        [str(worker), "--image", IMAGE, "--endpoint", "existing1", "--no-test"],
        api.env(),
        python=REST_PYTHON,
    )
    assert update.returncode == 0, update.stderr
    assert [c.operation for c in api.api_calls()[2:]] == [
        "GET /v2/serverless",
        "POST /v2/templates",
        "PATCH /v2/serverless/existing1",
    ]
    api.fail_status = 401
    refused = _cli([str(worker), "--image", IMAGE, "--no-test"], api.env(), python=REST_PYTHON)
    assert refused.returncode == deploy.EXIT_REFUSED
    assert refused.stderr == (
        "nbworker deploy: error: create_template: RunPod refused the API key: Unauthorized "
        "request, please check your API key.\n"
    )


# ------------------------------------------------------------------------ the whole path


@pytest.mark.slow
def test_a_deploy_replays_the_recorded_cases_on_the_endpoint(tmp_path: Path) -> None:
    """Export a notebook, serve its worker under the SDK behind the stand-in's endpoint API,
    deploy: the recorded cases go to the "endpoint" and pass; a worker that answers
    otherwise fails the replay, exit 1 as `nbworker test`."""
    from nbworker.export import export_notebook

    folder = tmp_path / "sentiment-worker"
    export_notebook(ROOT / "tests" / "data" / "sentiment.ipynb", folder)
    args = [str(folder), "--image", IMAGE, "--gpu", "AMPERE_16", "--wait", "10", "--timeout", "60"]
    with sdk_worker_server(folder) as url, ApiStandIn(key=KEY, worker_url=url) as api:
        done = _cli(args, api.env())
        assert done.returncode == 0, done.stdout + done.stderr
        (endpoint_id,) = (e for e in api.endpoints if e != "existing1")
        jobs = [r for r in api.requests if r.path.startswith(f"/ep/{endpoint_id}/run")]
        assert len(jobs) == 3 and {r.headers["authorization"] for r in jobs} == {f"Bearer {KEY}"}
        assert (
            f"replaying the cases recorded in {folder / 'tests' / 'sentiment.ipynb'}" in done.stderr
        )
        assert "3 passed" in done.stdout, done.stdout
    handler = folder / "handler.py"
    handler.write_text(handler.read_text().replace('"positive" if score > 0 else ', ""))
    with sdk_worker_server(folder) as url, ApiStandIn(key=KEY, worker_url=url) as api:
        failed = _cli(args, api.env())
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "failed" in failed.stdout


# ------------------------------------------------------------------------ what passes

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "image",
    [
        "runpod/base:0.6.2-cuda12.4.1",
        "ghcr.io/some-org/repo/worker:v1",
        "localhost:5000/worker",
        "worker",
        f"someone/worker@{DIGEST}",
        f"registry.example.com:443/team/w_x:1.0@{DIGEST}",
    ],
)
def test_image_references_docker_takes_pass(worker: Path, image: str) -> None:
    assert deploy.plan_deployment(worker, image=image).template.image == image


def test_a_notebook_source_replays_itself_and_reads_its_exported_worker(tmp_path: Path) -> None:
    notebook = tmp_path / "embed.ipynb"
    notebook.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    alone = deploy.plan_deployment(notebook, image=IMAGE)
    assert (alone.notebook, alone.hub, alone.endpoint and alone.endpoint.name) == (
        str(notebook),
        None,
        "embed",
    )
    (tmp_path / "embed-worker" / ".runpod").mkdir(parents=True)
    (tmp_path / "embed-worker" / ".runpod" / "hub.json").write_text(json.dumps(HUB))
    beside = deploy.plan_deployment(notebook, image=IMAGE, secrets={"HF_TOKEN": "hf"})
    assert beside.hub == str(tmp_path / "embed-worker" / ".runpod" / "hub.json")
    assert beside.template.env == {"HF_TOKEN": "{{ RUNPOD_SECRET_hf }}", "MODEL_NAME": "small"}
    assert beside.template.secrets == {"HF_TOKEN": "hf"}


def test_a_secret_named_hub_value_is_refused_unless_a_secret_replaces_it(worker: Path) -> None:
    hub = {"config": {"gpuIds": "ADA_24", "env": [{"key": "API_KEY", "value": "abc"}]}}
    (worker / ".runpod" / "hub.json").write_text(json.dumps(hub))
    with pytest.raises(DeployError, match=r"env API_KEY: a secret's value is never sent"):
        deploy.plan_deployment(worker, image=IMAGE)
    plan = deploy.plan_deployment(worker, image=IMAGE, secrets={"API_KEY": "api_key"})
    assert plan.template.env == {"API_KEY": "{{ RUNPOD_SECRET_api_key }}"}


def test_no_case_to_replay_is_no_failure_of_the_deploy_but_a_mismatch_is(worker: Path) -> None:
    from nbworker import testing

    plan = deploy.plan_deployment(worker, image=IMAGE)
    empty = testing.NotebookReport("x.ipynb", notes=["no %rp_test run is recorded"])
    assert testing.exit_code([empty]) == testing.EXIT_NO_CASES
    assert deploy.DeployResult(plan, "tpl1", "ep1", {}, reports=[empty]).exit_code == 0
    broken = testing.NotebookReport("x.ipynb", error="the kernel died")
    assert deploy.DeployResult(plan, "tpl1", "ep1", {}, reports=[broken]).exit_code == 3


@pytest.mark.slow
def test_rp_deploy_deploys_from_a_shell_with_the_sdk(api, worker) -> None:
    """`%rp_deploy` for real: an InteractiveShell in a process of its own (the SDK with it)."""
    line = f"%rp_deploy {worker} --image {IMAGE} --secret HF_TOKEN=hf_token --no-test --wait 10"
    code = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\n"
        "shell.run_line_magic('load_ext', 'nbworker')\n"
        f"result = shell.run_cell({line!r})\n"
        "print('ok' if result.success else f'failed: {result.error_in_exec!r}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **api.env()},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.stdout.strip().endswith("ok"), done.stdout + done.stderr
    (endpoint_id,) = (e for e in api.endpoints if e != "existing1")
    assert f"created endpoint my-worker ({endpoint_id})" in done.stdout
    assert f"endpoint {endpoint_id} is healthy" in done.stdout
    assert len(api.templates) == 1 and KEY not in done.stdout + done.stderr
