"""`nbworker deploy` / `%rp_deploy`: a worker's image -> a RunPod template and a queue
endpoint, made with the runpod SDK's own API functions; then a bounded wait for the
endpoint's health and a replay of the notebook's recorded cases against it.

    plan = plan_deployment("worker/", image="docker.io/me/worker:1.0", secrets={"HF_TOKEN": "hf"})
    print(describe(plan))               # the dry run: each SDK call and its arguments, no network
    result = deploy(plan, on_progress=print)

What a plan holds, and why:
- the template (`create_template`): named `<name>-<UTC time>-<4 hex>`, since RunPod refuses
  a second template of one name and a redeploy of the same tag needs a new template for the
  workers to pull it again; the image, env (values and secret references), container disk,
  `is_serverless=True`.
- a new endpoint (`create_endpoint`: GPU ids and count, workers min/max, idle timeout, the
  queue-delay scaler, FlashBoot), or an existing one (`--endpoint ID`: `get_endpoints` checks
  the account has it, `update_endpoint_template` points it at the new template; its GPUs,
  workers and scaling stay as they are).
- defaults from the worker's `.runpod/hub.json` (RunPod Hub's file, optional): GPU ids and
  count, CUDA versions, container disk, env values; a variable it lists that nothing gives
  is a warning. A notebook's worker is the `<stem>-worker` folder export writes beside it.

Secrets are never values: `--secret KEY=NAME` sends `{{ RUNPOD_SECRET_NAME }}` (RunPod's
reference to a secret of the account); `--env` refuses a value that export's secret scan flags
or a name that says it holds one (`..._KEY`, `_TOKEN`, `_SECRET`, `_PASSWORD`). runpod 1.12
writes every string into GraphQL text unescaped, so `"`, `\\` and control characters are
refused everywhere. The API key is RUNPOD_API_KEY's, never shown.

Healthy means: `/health` answers (the endpoint exists, the key works) and, when workers_min
> 0, a worker is idle, ready or running. With workers_min 0 no worker starts before a job
comes: the replay's first case starts one (a cold start: give `--timeout` room for it).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nbworker.deploy.checks import ENDPOINT, mapping, short
from nbworker.deploy.plan import (
    API_BASE,
    EXIT_REFUSED,
    EXIT_UNHEALTHY,
    OPTIONS,
    POLL_INTERVAL,
    EndpointPlan,
    Plan,
    TemplatePlan,
    describe,
    plan_deployment,
    plan_from_args,
)
from nbworker.errors import DeployError, DeployRefused, EndpointUnhealthy

__all__ = [
    "EXIT_REFUSED",
    "EXIT_UNHEALTHY",
    "OPTIONS",
    "DeployResult",
    "EndpointPlan",
    "Plan",
    "TemplatePlan",
    "deploy",
    "describe",
    "plan_deployment",
    "plan_from_args",
    "wait_until_healthy",
]


@dataclass
class DeployResult:
    """What `deploy` did: the ids, the last health answer, the replay's reports."""

    plan: Plan
    template_id: str
    endpoint_id: str
    health: dict[str, Any]
    reports: list[Any] = field(default_factory=list)  # testing.NotebookReport

    @property
    def exit_code(self) -> int:
        """0, or `nbworker test`'s code for the replay (1 a mismatch, 3 the notebook failed);
        no case to compare is no failure of the deployment: the summary says so."""
        if not self.reports:
            return 0
        from nbworker import testing

        code = testing.exit_code(self.reports)
        return 0 if code == testing.EXIT_NO_CASES else code

    def summary(self) -> str:
        verb = "created" if self.plan.endpoint is not None else "updated"
        lines = [
            f"{verb} endpoint {self.endpoint_id}: template {self.plan.template.name} "
            f"({self.template_id}), image {self.plan.template.image}"
        ]
        if self.reports:
            from nbworker import testing

            lines.append(testing.summary(self.reports))
        elif self.plan.test:
            lines.append("no recorded case to replay")
        return "\n".join(lines)


# --------------------------------------------------------------------------- deploying


def deploy(
    plan: Plan,
    *,
    on_progress: Callable[[str], None] = lambda line: None,
    poll_interval: float = POLL_INTERVAL,
) -> DeployResult:
    """Make the plan's SDK calls with RUNPOD_API_KEY, wait for the endpoint's health, replay
    the recorded cases. DeployRefused when the API refuses a call, EndpointUnhealthy when
    the wait runs out, DeployError without a key."""
    key = os.environ.get("RUNPOD_API_KEY")
    if not key:
        raise DeployError("RUNPOD_API_KEY is not set: the SDK calls need your RunPod API key")
    ctl = _sdk()
    workers_min = plan.endpoint.workers_min if plan.endpoint else 0
    with _api_key(key):
        if plan.endpoint_id is not None:
            found = _existing(_call("get_endpoints", ctl.get_endpoints, {}, key), plan.endpoint_id)
            workers_min = found.get("workersMin", mapping(found.get("workers")).get("min", 0))
        template = _call("create_template", ctl.create_template, plan.template.kwargs(), key)
        template_id = _id(template, "create_template")
        on_progress(f"created template {plan.template.name} ({template_id})")
        made = f" (template {template_id} was made before this failed)"
        if plan.endpoint is None:
            update = {"endpoint_id": plan.endpoint_id, "template_id": template_id}
            _call("update_endpoint_template", ctl.update_endpoint_template, update, key, made)
            endpoint_id = str(plan.endpoint_id)
            on_progress(f"endpoint {endpoint_id} now runs template {template_id}")
        else:
            kwargs = plan.endpoint.kwargs(template_id)
            endpoint_id = _id(
                _call("create_endpoint", ctl.create_endpoint, kwargs, key, made), "create_endpoint"
            )
            on_progress(f"created endpoint {plan.endpoint.name} ({endpoint_id})")
    health = wait_until_healthy(
        endpoint_id,
        workers_min=workers_min if isinstance(workers_min, int) else 0,
        wait=plan.wait,
        poll_interval=poll_interval,
        on_progress=on_progress,
        api_key=key,
    )
    result = DeployResult(plan, template_id, endpoint_id, health)
    if plan.test and plan.notebook is not None:
        on_progress(f"replaying the cases recorded in {plan.notebook} on {endpoint_id}")
        from nbworker import testing

        options = testing.Options(endpoint=endpoint_id, timeout=plan.timeout)
        result.reports = [testing.test_notebook(plan.notebook, options)]
    return result


def wait_until_healthy(
    endpoint_id: str,
    *,
    workers_min: int,
    wait: float,
    poll_interval: float = POLL_INTERVAL,
    on_progress: Callable[[str], None] = lambda line: None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Poll the endpoint's `/health` until it is healthy (see the module's docstring), at
    most `wait` seconds: its last answer, or EndpointUnhealthy."""
    from nbworker.client import Endpoint
    from nbworker.errors import EndpointError

    endpoint = Endpoint(
        endpoint_id=endpoint_id, api_key=api_key, timeout=min(30.0, wait), retries=0
    )
    started = time.monotonic()
    last: dict[str, Any] | None = None
    problem = "no answer yet"
    while True:
        try:
            last = endpoint.health()
        except EndpointError as err:
            if err.status_code in (401, 403):
                raise DeployRefused(str(err), call="health", status_code=err.status_code) from None
            problem = str(err)
        else:
            workers = mapping(last.get("workers"))
            counts = [workers.get(state, 0) for state in ("idle", "ready", "running")]
            up = sum(n for n in counts if isinstance(n, int))
            state = ", ".join(f"{k} {v}" for k, v in sorted(workers.items())) or "no workers"
            elapsed = time.monotonic() - started
            if workers_min == 0 or up > 0:
                on_progress(f"endpoint {endpoint_id} is healthy ({state}) after {elapsed:.0f}s")
                return last
            problem = f"workers: {state}"
            on_progress(f"waiting for a worker of {endpoint_id}: {state} ({elapsed:.0f}s)")
        left = wait - (time.monotonic() - started)
        if left <= 0:
            raise EndpointUnhealthy(
                f"endpoint {endpoint_id} is not healthy after {wait:g}s ({short(problem)}); "
                "its workers may still be pulling the image: see its logs in RunPod's console, "
                f"and replay later with nbworker test NOTEBOOK --endpoint {endpoint_id}",
                endpoint_id=endpoint_id,
                waited=wait,
                health=last,
            )
        time.sleep(min(poll_interval, left))  # a poll of a remote service, not test sync


def _sdk() -> Any:
    """runpod's API functions (imported here: `import runpod` costs 1.5 s under 1.12)."""
    try:
        return importlib.import_module("runpod.api.ctl_commands")
    except ImportError as err:
        raise DeployError(f"the runpod SDK cannot be imported: {short(err)}") from None


@contextlib.contextmanager
def _api_key(key: str) -> Iterator[None]:
    """The SDK's API functions read the key from `runpod.api_key`: set it for the calls."""
    runpod = importlib.import_module("runpod")
    before = getattr(runpod, "api_key", None)
    runpod.api_key = key  # type: ignore[attr-defined]
    try:
        yield
    finally:
        runpod.api_key = before  # type: ignore[attr-defined]


def _call(name: str, function: Any, kwargs: dict[str, Any], key: str, after: str = "") -> Any:
    """`function(**kwargs)`; any failure of the SDK or its transport a one-line DeployRefused."""
    import requests

    error = importlib.import_module("runpod.error")
    status: int | None
    try:
        return function(**kwargs)
    except error.AuthenticationError as err:
        message, status = f"RunPod refused the API key: {err}", 401
    except error.QueryError as err:
        message, status = (
            f"RunPod's API answered an error: {err}",
            getattr(err, "status_code", None),
        )
    except requests.RequestException as err:
        response = getattr(err, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(err, requests.ConnectionError):
            message = f"cannot reach {os.environ.get('RUNPOD_API_BASE_URL') or API_BASE}"
        elif isinstance(err, ValueError):  # requests' JSONDecodeError: an HTML error page
            message = "the API answered something that is not JSON (an outage page?)"
        else:
            message = f"{type(err).__name__}: {err}"
    except (KeyError, TypeError, ValueError) as err:  # an answer without the data it parses
        message, status = f"an answer the SDK cannot read ({type(err).__name__}: {err})", None
    from nbworker.export.secrets import redact

    text = redact(short(f"{name}: {message}".replace(key, "***"), 300)) + after
    raise DeployRefused(text, call=name, status_code=status) from None


def _id(answer: Any, call: str) -> str:
    ident = answer.get("id") if isinstance(answer, dict) else None
    if not isinstance(ident, str) or not ENDPOINT.fullmatch(ident):
        raise DeployRefused(f"{call}: the answer has no id: {short(json.dumps(answer))}", call=call)
    return ident


def _existing(endpoints: Any, endpoint_id: str) -> dict[str, Any]:
    listed = [e for e in endpoints or [] if isinstance(e, dict)]
    for endpoint in listed:
        if endpoint.get("id") == endpoint_id:
            return endpoint
    have = ", ".join(str(e.get("id")) for e in listed[:10]) or "none"
    raise DeployRefused(
        f"get_endpoints: this account has no endpoint {endpoint_id} (it has: {have})",
        call="get_endpoints",
    )
