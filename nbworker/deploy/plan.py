"""A deployment's plan: the SDK calls with their arguments (`plan_deployment`), read from the
options, the source and its hub.json, and shown by the dry run (`describe`). No network."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nbworker.deploy import checks
from nbworker.errors import DeployError

EXIT_REFUSED = 4  # RunPod's API refused or failed a call
EXIT_UNHEALTHY = 6  # no worker ready by the end of --wait
DEFAULT_GPU_IDS = "AMPERE_16"  # the SDK's own default
DEFAULT_DISK_GB = 10
DEFAULT_WORKERS = (0, 3)
DEFAULT_IDLE_TIMEOUT = 5
DEFAULT_WAIT = 600.0
POLL_INTERVAL = 5.0
SCALER = ("QUEUE_DELAY", 4)  # a worker more when a job has waited 4 s
TEMPLATE_ID = "<the id create_template answers>"
ENDPOINT_ID = "<the id create_endpoint answers>"
API_BASE = "https://api.runpod.io"  # the SDK's default; RUNPOD_API_BASE_URL overrides it

# The options of `nbworker deploy` and `%rp_deploy` (argparse's, as nbworker.arguments holds
# the other magics'); both add SOURCE. Defaults are None: hub.json's, then nbworker's, apply.
OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--image",), {"required": True, "help": "the worker's image: registry/name:tag[@digest]"}),
    (("--name",), {"help": "the endpoint's name (default: the source's)"}),
    (("--endpoint",), {"metavar": "ID", "help": "update this endpoint's template instead"}),
    (
        ("--gpu",),
        {
            "action": "append",
            "metavar": "ID",
            "help": "GPU pool or type id, repeatable; --gpu=-ID "
            "excludes one (default: hub.json's gpuIds, else AMPERE_16)",
        },
    ),
    (("--gpu-count",), {"type": int, "metavar": "N", "help": "GPUs per worker (default 1)"}),
    (("--workers-min",), {"type": int, "metavar": "N", "help": "default 0"}),
    (("--workers-max",), {"type": int, "metavar": "N", "help": "default 3"}),
    (("--idle-timeout",), {"type": int, "metavar": "S", "help": "seconds (default 5)"}),
    (("--env",), {"action": "append", "metavar": "KEY=VALUE", "help": "repeatable; no secrets"}),
    (
        ("--secret",),
        {
            "action": "append",
            "metavar": "KEY=NAME",
            "help": "KEY gets the RunPod secret NAME ({{ RUNPOD_SECRET_NAME }}), repeatable",
        },
    ),
    (("--no-flashboot",), {"action": "store_true", "help": "create the endpoint without it"}),
    (("--dry-run",), {"action": "store_true", "help": "print the plan; send nothing"}),
    (("--no-test",), {"action": "store_true", "help": "do not replay the recorded cases"}),
    (("--wait",), {"type": float, "metavar": "S", "help": "for health (default 600)"}),
    (("--timeout",), {"type": float, "metavar": "S", "help": "per replayed job"}),
]


@dataclass(frozen=True)
class TemplatePlan:
    """The `create_template` call."""

    name: str
    image: str
    env: dict[str, str]  # as sent: values and `{{ RUNPOD_SECRET_... }}` references
    secrets: dict[str, str]  # env key -> the RunPod secret's name
    container_disk_in_gb: int = DEFAULT_DISK_GB
    is_serverless: bool = True

    def kwargs(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image_name": self.image,
            "container_disk_in_gb": self.container_disk_in_gb,
            "env": dict(self.env),
            "is_serverless": self.is_serverless,
        }


@dataclass(frozen=True)
class EndpointPlan:
    """The `create_endpoint` call (a new queue endpoint)."""

    name: str
    gpu_ids: str  # comma-separated, as the SDK takes them
    gpu_count: int = 1
    workers_min: int = DEFAULT_WORKERS[0]
    workers_max: int = DEFAULT_WORKERS[1]
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT
    scaler_type: str = SCALER[0]
    scaler_value: int = SCALER[1]
    flashboot: bool = True
    allowed_cuda_versions: str | None = None

    def kwargs(self, template_id: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "template_id": template_id,
            "gpu_ids": self.gpu_ids,
            "gpu_count": self.gpu_count,
            "workers_min": self.workers_min,
            "workers_max": self.workers_max,
            "idle_timeout": self.idle_timeout,
            "scaler_type": self.scaler_type,
            "scaler_value": self.scaler_value,
            "flashboot": self.flashboot,
            "allowed_cuda_versions": self.allowed_cuda_versions,
        }


@dataclass(frozen=True)
class Plan:
    """Everything a deployment does: the SDK calls, then the wait and the replay."""

    source: str
    template: TemplatePlan
    endpoint: EndpointPlan | None  # a new endpoint; None: update `endpoint_id`'s template
    endpoint_id: str | None = None
    notebook: str | None = None  # whose recorded cases are replayed
    hub: str | None = None  # the hub.json read
    wait: float = DEFAULT_WAIT
    test: bool = True
    timeout: float | None = None
    warnings: list[str] = field(default_factory=list)

    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        """The SDK calls, in order, with their arguments (ids not known yet as placeholders)."""
        calls = [("create_template", self.template.kwargs())]
        if self.endpoint is not None:
            return [*calls, ("create_endpoint", self.endpoint.kwargs(TEMPLATE_ID))]
        update = {"endpoint_id": self.endpoint_id, "template_id": TEMPLATE_ID}
        return [("get_endpoints", {}), *calls, ("update_endpoint_template", update)]


# --------------------------------------------------------------------------- planning


def plan_from_args(source: str, args: Any) -> Plan:
    """`plan_deployment` from the parsed OPTIONS (the CLI's and the magic's)."""
    return plan_deployment(
        source,
        image=args.image,
        name=args.name,
        endpoint_id=args.endpoint,
        gpu_ids=args.gpu or (),
        gpu_count=args.gpu_count,
        workers_min=args.workers_min,
        workers_max=args.workers_max,
        idle_timeout=args.idle_timeout,
        env=checks.pairs(args.env or (), "--env"),
        secrets=checks.pairs(args.secret or (), "--secret"),
        flashboot=False if args.no_flashboot else None,
        wait=args.wait,
        test=not args.no_test,
        timeout=args.timeout,
    )


def plan_deployment(
    source: str | os.PathLike[str],
    *,
    image: str,
    name: str | None = None,
    endpoint_id: str | None = None,
    gpu_ids: Sequence[str] = (),
    gpu_count: int | None = None,
    workers_min: int | None = None,
    workers_max: int | None = None,
    idle_timeout: int | None = None,
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    flashboot: bool | None = None,
    wait: float | None = None,
    test: bool = True,
    timeout: float | None = None,
    now: datetime | None = None,
) -> Plan:
    """The plan for deploying `image`, built from `source` (a notebook, or a worker folder);
    DeployError (one line, naming the option) for anything it cannot send as asked."""
    path = Path(source)
    folder, notebook = _source(path)
    hub_path, hub = _hub(folder)
    config = checks.mapping(hub.get("config"))
    checks.check_image(image)
    name = checks.checked(
        name, checks.NAME, "--name", "letters, digits, '.', '_', '-'"
    ) or checks.name_of(path)
    if endpoint_id is not None:
        checks.checked(endpoint_id, checks.ENDPOINT, "--endpoint", "letters, digits, '_', '-'")
        given = {
            "--gpu": gpu_ids or None,
            "--gpu-count": gpu_count,
            "--workers-min": workers_min,
            "--workers-max": workers_max,
            "--idle-timeout": idle_timeout,
            "--no-flashboot": flashboot,
        }
        for option, value in given.items():
            if value is not None:
                raise DeployError(
                    f"{option}: with --endpoint only the template changes; set the endpoint's "
                    "GPUs, workers and scaling in RunPod's console",
                    option=option,
                )
    if wait is not None and not wait > 0:
        raise DeployError(f"--wait must be positive, not {wait:g}", option="--wait")
    if timeout is not None and not timeout > 0:
        raise DeployError(f"--timeout must be positive, not {timeout:g}", option="--timeout")
    template_env, secret_names, warnings = _environment(env or {}, secrets or {}, hub, hub_path)
    disk = checks.number(
        config.get("containerDiskInGb", DEFAULT_DISK_GB), "hub.json containerDiskInGb", 1
    )
    # unique as RunPod wants template names: the time, and 4 hex digits for two in a second
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S-") + os.urandom(2).hex()
    template = TemplatePlan(f"{name}-{stamp}", image, template_env, secret_names, disk)
    endpoint = None
    if endpoint_id is None:
        endpoint = _endpoint_plan(
            name, config, gpu_ids, gpu_count, workers_min, workers_max, idle_timeout, flashboot
        )
        if endpoint.workers_min == 0 and test:
            warnings.append(
                "workers min 0: no worker runs before a job comes, so the first replayed case "
                "waits for a cold start (image pull, model load): give --timeout room for it"
            )
    else:
        warnings.append(
            f"endpoint {endpoint_id}: RunPod rolls its workers over to the new template; until "
            "it has, a job may still reach a worker of the old one"
        )
    if test and notebook is None:
        warnings.append(f"{path}: no notebook with recorded cases found: nothing to replay")
    return Plan(
        str(path),
        template,
        endpoint,
        endpoint_id=endpoint_id,
        notebook=notebook,
        hub=hub_path,
        wait=DEFAULT_WAIT if wait is None else wait,
        test=test,
        timeout=timeout,
        warnings=warnings,
    )


def _source(path: Path) -> tuple[Path | None, str | None]:
    """(the worker folder, the notebook whose cases are replayed) of a source."""
    if path.is_dir():
        if not (path / "handler.py").is_file():
            raise DeployError(f"{path}: a folder without handler.py is no worker folder")
        copies = sorted((path / "tests").glob("*.ipynb"))  # export keeps the notebook there
        return path, str(copies[0]) if len(copies) == 1 else None
    if path.is_file() and path.suffix == ".ipynb":
        from nbworker.export import default_directory

        worker = default_directory(path)
        return (worker if worker.is_dir() else None), str(path)
    if path.exists():
        raise DeployError(f"{path}: not a notebook (.ipynb) or a worker folder")
    raise DeployError(f"no such notebook or worker folder: {path}")


def _hub(folder: Path | None) -> tuple[str | None, dict[str, Any]]:
    """The worker's `.runpod/hub.json`, if it has one: (its path, its object)."""
    if folder is None or not (folder / ".runpod" / "hub.json").is_file():
        return None, {}
    path = folder / ".runpod" / "hub.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DeployError(f"{path}: cannot read it as JSON ({checks.short(err)})") from None
    if not isinstance(value, dict):
        raise DeployError(f"{path}: a JSON {type(value).__name__}, not hub.json's object")
    return str(path), value


def _endpoint_plan(
    name: str,
    config: Mapping[str, Any],
    gpu_ids: Sequence[str],
    gpu_count: int | None,
    workers_min: int | None,
    workers_max: int | None,
    idle_timeout: int | None,
    flashboot: bool | None,
) -> EndpointPlan:
    if not gpu_ids and config.get("runsOn") == "CPU":
        raise DeployError(
            "hub.json says the worker runs on CPU; the SDK's create_endpoint makes GPU "
            "endpoints: give --gpu ID to deploy it on a GPU",
            option="--gpu",
        )
    hub_gpus = config.get("gpuIds")
    if gpu_ids:
        ids = checks.gpu_ids(gpu_ids, "--gpu")
    elif isinstance(hub_gpus, str) and hub_gpus.strip():
        ids = checks.gpu_ids([hub_gpus], "hub.json gpuIds")
    else:
        ids = DEFAULT_GPU_IDS
    low = checks.number(
        DEFAULT_WORKERS[0] if workers_min is None else workers_min, "--workers-min", 0
    )
    high = checks.number(
        DEFAULT_WORKERS[1] if workers_max is None else workers_max, "--workers-max", 1
    )
    if low > high:
        raise DeployError(
            f"--workers-min {low} is more than --workers-max {high}", option="--workers-min"
        )
    idle = DEFAULT_IDLE_TIMEOUT if idle_timeout is None else idle_timeout
    cuda = config.get("allowedCudaVersions")
    if cuda is not None and not (
        isinstance(cuda, list)
        and all(isinstance(v, str) and checks.CUDA.fullmatch(v) for v in cuda)
    ):
        raise DeployError(f"hub.json allowedCudaVersions: not a list of versions: {cuda!r}")
    count_from = "--gpu-count" if gpu_count is not None else "hub.json gpuCount"
    count = gpu_count if gpu_count is not None else config.get("gpuCount", 1)
    return EndpointPlan(
        name,
        ids,
        gpu_count=checks.number(count, count_from, 1),
        workers_min=low,
        workers_max=high,
        idle_timeout=checks.number(idle, "--idle-timeout", 1),
        flashboot=flashboot is not False,
        allowed_cuda_versions=",".join(cuda) if cuda else None,
    )


def _environment(
    env: Mapping[str, str],
    secrets: Mapping[str, str],
    hub: Mapping[str, Any],
    hub_path: str | None,
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(the template's env, env key -> secret name, warnings): what is given, then hub.json's
    values for the rest; a variable hub.json lists that nothing gives is a warning."""
    out: dict[str, str] = {}
    names: dict[str, str] = {}
    for key, secret in secrets.items():
        checks.env_key(key, "--secret")
        checks.checked(secret, checks.SECRET, f"--secret {key}", "letters, digits, '_', '-'")
        if checks.flagged("secret_name", secret):
            raise DeployError(
                f"--secret {key}=...: that looks like the secret itself; give the name of a "
                "RunPod secret (made in the console, Secrets), not its value",
                option="--secret",
            )
        out[key], names[key] = f"{{{{ RUNPOD_SECRET_{secret} }}}}", secret
    for key, value in env.items():
        if key in out:
            raise DeployError(f"--env {key}: given as --secret too", option="--env")
        out[key] = checks.env_value(key, value, "--env")
    warnings = []
    config = checks.mapping(hub.get("config"))
    listed = config.get("env", hub.get("env", []))
    for entry in listed if isinstance(listed, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            continue
        key = entry["key"]
        checks.env_key(key, "hub.json env")
        if key in out:
            continue
        field_ = checks.mapping(entry.get("input"))
        default = entry.get("value", field_.get("default"))
        if isinstance(default, (str, int, float, bool)) and str(default) != "":
            out[key] = checks.env_value(
                key,
                str(default).lower() if isinstance(default, bool) else str(default),
                f"hub.json ({hub_path}) env",
            )
        else:
            how = f"--secret {key}=NAME" if checks.SECRET_KEY.search(key) else f"--env {key}=VALUE"
            warnings.append(f"the worker reads {key} (hub.json) and nothing gives it: {how}")
    return out, names, warnings


# --------------------------------------------------------------------------- the dry run


def describe(plan: Plan, *, dry_run: bool = True) -> str:
    """The plan as text: each SDK call with its arguments (secrets as their references),
    then the wait and the replay; never the API key."""
    base = os.environ.get("RUNPOD_API_BASE_URL") or API_BASE
    key = "set" if os.environ.get("RUNPOD_API_KEY") else "not set (needed to deploy)"
    head = "dry run: nothing is sent" if dry_run else "deploying"
    lines = [
        f"nbworker deploy {plan.source} ({head})",
        f"RunPod API: {base}; RUNPOD_API_KEY {key}",
        f"hub.json: {plan.hub or 'none'}",
    ]
    for number, (name, kwargs) in enumerate(plan.calls(), 1):
        if not kwargs:
            lines.append(f"{number}. runpod.api.ctl_commands.{name}()")
            continue
        lines.append(f"{number}. runpod.api.ctl_commands.{name}(")
        lines += [f"       {key_}={value!r}," for key_, value in kwargs.items()]
        lines.append("   )")
        if name == "create_template":
            lines += [
                f"   env {key_}: the RunPod secret {secret!r} (it must exist in the account)"
                for key_, secret in plan.template.secrets.items()
            ]
    target = plan.endpoint_id or ENDPOINT_ID
    endpoints = os.environ.get("RUNPOD_ENDPOINT_BASE_URL") or "https://api.runpod.ai/v2"
    workers = plan.endpoint.workers_min if plan.endpoint else "as get_endpoints says"
    lines.append(
        f"then: GET {endpoints}/{target}/health every {POLL_INTERVAL:g}s, up to {plan.wait:g}s, "
        f"until it answers and, if workers min > 0 ({workers}), a worker is ready"
    )
    if not plan.test:
        lines.append("then: no replay (--no-test)")
    elif plan.notebook:
        per = f", {plan.timeout:g}s a job" if plan.timeout else ""
        lines.append(f"then: replay the cases recorded in {plan.notebook} on the endpoint{per}")
    lines += [f"warning: {warning}" for warning in plan.warnings]
    return "\n".join(lines)
