"""Static checks of the container images (deploy/docker/), which cannot be
built here: no container engine runs on the test machines.

Both Dockerfiles are parsed into instructions (line continuations joined,
comment lines dropped) and checked against what the images must be and
against the real programs and package list:
  - stages: a build stage on debian:12 and a runtime stage on debian:12-slim
    (bookworm), the build stage identical in both files, building the three
    programs Release with -DIMAGEN_WERROR=ON;
  - packages: the only way a package gets in is scripts/install-deps.sh with
    a section of scripts/debian-packages.txt (no apt-get of its own); every
    shared library the copied binaries link comes from the runtime section
    the stage installs; the runtime packages exist in Debian 12;
  - the runtime stage: non-root numeric user, ports, /models volume,
    HEALTHCHECK, entrypoint + default arguments that the real binaries'
    --check-config accepts, and a HEALTHCHECK command that really succeeds
    against a running server / worker;
  - the build context: every COPY source exists and survives .dockerignore,
    and the copied tree configures with CMake;
  - the worker image is thin: no server, no backends, no Python.

Environment: IMAGEN_SERVER_BIN (the worker and imagen are found next to it).
"""
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess

import pytest

from conftest import ROOT, SERVER_BIN
from workerutil import WORKER_BIN, worker_factory  # noqa: F401 (fixture)

DOCKER_DIR = os.path.join(ROOT, "deploy", "docker")
DOCKERFILES = {"server": os.path.join(DOCKER_DIR, "Dockerfile.server"),
               "worker": os.path.join(DOCKER_DIR, "Dockerfile.worker")}
PACKAGE_LIST = os.path.join(ROOT, "scripts", "debian-packages.txt")
INSTALLER = os.path.join(ROOT, "scripts", "install-deps.sh")
CLI_BIN = os.environ.get("IMAGEN_CLI_BIN", os.path.join(os.path.dirname(SERVER_BIN), "imagen"))
BINARY_OF = {"imagen-server": SERVER_BIN, "imagen-worker": WORKER_BIN, "imagen": CLI_BIN}
# The C library is part of every Debian image (Essential), never listed.
BASE_PACKAGES = {"libc6"}


# -- parsing -----------------------------------------------------------------

class Instruction:
    def __init__(self, keyword, args, line):
        self.keyword = keyword
        self.args = args
        self.line = line

    def exec_form(self):
        """The JSON (exec) form's argv, or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        return json.loads(text)

    def flags_and_words(self):
        """(--flag=value dict, remaining words) of COPY/ADD/FROM-like args."""
        flags, words = {}, []
        for w in shlex.split(self.args):
            if w.startswith("--") and not words:
                name, _, value = w[2:].partition("=")
                flags[name] = value
            else:
                words.append(w)
        return flags, words

    def __repr__(self):
        return f"line {self.line}: {self.keyword} {self.args}"


def parse_dockerfile(path):
    """Instructions of a Dockerfile, continuation lines ('\\' at the end)
    joined and comment lines (also those inside a continuation) dropped, as
    the Docker builder does."""
    instructions = []
    pending, start = None, 0
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            stripped = line.strip()
            if stripped.startswith("#") or (not stripped and pending is None):
                continue
            if pending is None:
                pending, start = "", number
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            pending += stripped
            keyword, _, args = pending.strip().partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip(), start))
            pending = None
    assert pending is None, f"{path}: the last instruction ends in a line continuation"
    return instructions


def stages(path):
    """[(FROM instruction, [instructions of the stage])] in order."""
    result = []
    for ins in parse_dockerfile(path):
        if ins.keyword == "FROM":
            result.append((ins, []))
        else:
            assert result, f"{path}: {ins!r} comes before the first FROM"
            result[-1][1].append(ins)
    return result


def stage_alias(from_ins):
    words = from_ins.args.split()
    return words[2] if len(words) == 3 and words[1].upper() == "AS" else None


def last(instructions, keyword):
    found = [i for i in instructions if i.keyword == keyword]
    return found[-1] if found else None


def runtime_stage(name):
    return stages(DOCKERFILES[name])[-1][1]


def build_stage(name):
    return stages(DOCKERFILES[name])[0][1]


def package_sections():
    """{section: [packages]} of scripts/debian-packages.txt (the format
    install-deps.sh reads: '[name]' headers, one package per line)."""
    sections, current = {}, None
    with open(PACKAGE_LIST) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                current = line.strip("[]")
                sections[current] = []
            else:
                assert current, f"{PACKAGE_LIST}: package {line!r} before any [section]"
                sections[current].append(line.split()[0])
    return sections


def installed_sections(instructions):
    """Sections the RUN instructions install through install-deps.sh."""
    result = []
    for ins in instructions:
        if ins.keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", ins.args):
            words = shlex.split(command)
            if words and words[0].endswith("install-deps.sh"):
                assert "--list" not in words, ins
                result += words[1:]
    return result


def docker_ignored(path):
    """Whether the build context leaves `path` (relative to the repository)
    out under .dockerignore: patterns in order, the last match wins, '!'
    keeps, a pattern matching a parent directory covers everything in it."""
    patterns = []
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line)
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        body = pattern[1:] if keep else pattern
        body = body.strip("/")
        for prefix in prefixes:
            if pattern_matches(body, prefix):
                ignored = not keep
                break
    return ignored


def pattern_matches(pattern, path):
    """Go filepath.Match semantics ('*' stays within one path element) plus
    '**' for any number of elements, as .dockerignore has them."""
    p_parts, s_parts = pattern.split("/"), path.split("/")

    def match(i, j):
        if i == len(p_parts):
            return j == len(s_parts)
        if p_parts[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(s_parts) + 1))
        return j < len(s_parts) and fnmatch.fnmatchcase(s_parts[j], p_parts[i]) and match(i + 1, j + 1)

    return match(0, 0)


def copies(instructions):
    """(flags, sources, destination, instruction) of every COPY/ADD."""
    result = []
    for ins in instructions:
        if ins.keyword in ("COPY", "ADD"):
            flags, words = ins.flags_and_words()
            assert len(words) >= 2, ins
            result.append((flags, words[:-1], words[-1], ins))
    return result


def help_default(binary, flag):
    """The default the binary's --help states for --flag (server style
    '--flag=<x>  (default: N)' or worker style '--flag N ... (default N)')."""
    text = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30).stdout
    for line in text.splitlines():
        if re.match(rf"\s*--{re.escape(flag)}\b", line):
            m = re.search(r"\(default:? ([^)]+)\)", line)
            if m:
                return m.group(1)
    raise AssertionError(f"{binary} --help states no default for --{flag}:\n{text}")


# -- stages and build --------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_stages_are_debian_12_build_then_slim_runtime(name):
    all_stages = stages(DOCKERFILES[name])
    assert len(all_stages) >= 2, f"{name}: not multi-stage"
    first_from, final_from = all_stages[0][0], all_stages[-1][0]
    assert first_from.args.split()[0] == "debian:12" and stage_alias(first_from) == "build", first_from
    assert final_from.args.split() == ["debian:12-slim"], final_from
    for from_ins, _ in all_stages:
        image = from_ins.args.split()[0]
        # Debian 12 is bookworm; a floating tag (latest, stable, slim) would
        # move the images to the next release with other library sonames.
        assert image in ("debian:12", "debian:12-slim", "debian:bookworm", "debian:bookworm-slim") \
            or image in {stage_alias(f) for f, _ in all_stages}, from_ins


def test_build_stage_is_identical_in_both_images():
    # Same instructions on the same context: one build serves both images.
    server = [(i.keyword, i.args) for i in build_stage("server")]
    worker = [(i.keyword, i.args) for i in build_stage("worker")]
    assert server == worker


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_build_stage_builds_release_with_werror_and_installs_to_usr_local_bin(name):
    stage = build_stage(name)
    assert installed_sections(stage) == ["build"]
    runs = " ".join(i.args for i in stage if i.keyword == "RUN")
    configure = re.search(r"cmake -S (\S+) -B (\S+)([^&]*)", runs)
    assert configure, runs
    options = configure.group(3).split()
    assert "-DIMAGEN_WERROR=ON" in options and "-DCMAKE_BUILD_TYPE=Release" in options, options
    build = re.search(r"cmake --build (\S+)[^&]*--target ([^&]+)", runs)
    assert build and build.group(1) == configure.group(2), runs
    assert set(build.group(2).split()) == {"imagen-server", "imagen-worker", "imagen"}
    install = re.search(r"\binstall\b[^&]*-t /usr/local/bin ([^&]+)", runs)
    assert install, runs
    installed = {os.path.basename(p) for p in install.group(1).split()}
    assert installed == {"imagen-server", "imagen-worker", "imagen"}


def test_build_stage_copies_configure_with_cmake(tmp_path):
    """The tree the build stage COPYs (after .dockerignore) is enough for
    CMakeLists.txt: a configure run on a copy of exactly that tree works."""
    if not shutil.which("cmake"):
        pytest.skip("cmake is not installed")
    context = tmp_path / "context"
    for flags, sources, dest, ins in copies(build_stage("server")):
        assert "from" not in flags, ins
        for source in sources:
            target = dest.rstrip("/") + "/" + os.path.basename(source) if dest.endswith("/") else dest
            target = context / target.lstrip("/")
            src = os.path.join(ROOT, source)
            if os.path.isdir(src):
                shutil.copytree(src, target, ignore=lambda d, names: [
                    n for n in names if docker_ignored(os.path.relpath(os.path.join(d, n), ROOT))])
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
    p = subprocess.run(["cmake", "-S", str(context / "src"), "-B", str(tmp_path / "build"),
                        "-DCMAKE_BUILD_TYPE=Release", "-DIMAGEN_WERROR=ON"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    # The build directory knows the three programs' targets.
    targets = subprocess.run(["cmake", "--build", str(tmp_path / "build"), "--target", "help"],
                             capture_output=True, text=True, timeout=120).stdout
    for target in ("imagen-server", "imagen-worker", "imagen"):
        assert re.search(rf"^\.\.\. {re.escape(target)}$", targets, re.M), targets


# -- build context -----------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_every_copy_source_exists_and_is_in_the_context(name):
    all_stages = stages(DOCKERFILES[name])
    produced = {}
    for from_ins, instructions in all_stages:
        runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
        install = re.search(r"\binstall\b[^&]*-t (\S+) ([^&]+)", runs)
        produced[stage_alias(from_ins)] = (
            {os.path.join(install.group(1), os.path.basename(p)) for p in install.group(2).split()}
            if install else set())
        for flags, sources, _, ins in copies(instructions):
            assert ins.keyword == "COPY", f"{ins!r}: ADD fetches and unpacks; COPY says what it does"
            for source in sources:
                if "from" in flags:
                    assert flags["from"] in produced, f"{ins!r}: no earlier stage {flags['from']!r}"
                    assert source in produced[flags["from"]], \
                        f"{ins!r}: stage {flags['from']!r} does not install {source}"
                else:
                    assert not os.path.isabs(source) and ".." not in source.split("/"), ins
                    assert os.path.exists(os.path.join(ROOT, source)), f"{ins!r}: {source} is not in the repository"
                    assert not docker_ignored(source), f"{ins!r}: .dockerignore leaves {source} out of the context"


def test_dockerignore_leaves_out_build_trees_and_integration_tests():
    for path in ("build/imagen-server", "build-docker/CMakeCache.txt", "out/x.png", ".git/HEAD",
                 "tests/integration/conftest.py", "models/upscale/config.pbtxt",
                 "src/__pycache__/x.pyc"):
        assert docker_ignored(path), path
    assert not docker_ignored("src/cli/server_main.c")


def test_final_stages_copy_no_test_files():
    for name in DOCKERFILES:
        for flags, sources, dest, ins in copies(runtime_stage(name)):
            for source in sources:
                assert not re.search(r"(^|/)(tests?|test-backends)(/|$)", source), ins
                if "from" in flags:
                    assert source.startswith("/usr/local/bin/imagen"), ins


# -- packages ----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_packages_come_only_from_the_list(name):
    sections = package_sections()
    listed = {p for packages in sections.values() for p in packages}
    for from_ins, instructions in stages(DOCKERFILES[name]):
        for section in installed_sections(instructions):
            assert section in sections, f"{name}: install-deps.sh section {section!r} is not in {PACKAGE_LIST}"
        for ins in instructions:
            if ins.keyword != "RUN":
                continue
            for command in re.split(r"&&|;|\|\|", ins.args):
                words = shlex.split(command)
                if words[:1] in (["apt-get"], ["apt"]) and "install" in words:
                    named = [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
                    missing = [p for p in named if p not in listed]
                    assert not missing, f"{ins!r}: {missing} are not in {PACKAGE_LIST}"
    # Each image's runtime stage installs its own runtime section.
    assert installed_sections(runtime_stage(name)) == [f"runtime-{name}"]


def test_installer_lists_sections_and_refuses_unknown_ones():
    sections = package_sections()
    for section in ("runtime-server", "runtime-worker", "build"):
        p = subprocess.run([INSTALLER, "--list", section], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == list(dict.fromkeys(sections[section]))
    p = subprocess.run([INSTALLER, "--list", "runtime-nothing"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "runtime-nothing" in p.stderr and "runtime-server" in p.stderr, p.stderr


def test_installer_runs_as_root_without_sudo(tmp_path):
    """In a container build the installer runs as root where sudo does not
    exist: stand-in id/dpkg-query/apt-get/sudo record what it runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    stubs = {
        "id": "echo 0",
        "dpkg-query": "exit 1",  # nothing installed, as on a bare image
        "apt-get": f'echo "apt-get $*" >> {log}',
        "sudo": f'echo "sudo $*" >> {log}; exit 1',
    }
    for tool, body in stubs.items():
        path = bin_dir / tool
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin")
    p = subprocess.run(["bash", INSTALLER, "runtime-worker"], capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    calls = log.read_text().splitlines()
    assert not [c for c in calls if c.startswith("sudo")], calls
    assert calls[0] == "apt-get update", calls
    install = calls[1].split()
    assert install[:4] == ["apt-get", "install", "-y", "--no-install-recommends"], calls
    assert install[4:] == package_sections()["runtime-worker"], calls


@pytest.mark.parametrize("section", ["runtime-server", "runtime-worker"])
def test_runtime_packages_exist_in_debian_12(section):
    if not shutil.which("apt-cache"):
        pytest.skip("apt-cache is not installed")
    release = open("/etc/os-release").read() if os.path.exists("/etc/os-release") else ""
    if 'VERSION_ID="12"' not in release:
        pytest.skip("the package index here is not Debian 12's")
    packages = package_sections()[section]
    # One query for all: apt-cache prints the records it finds and names
    # the packages it cannot.
    p = subprocess.run(["apt-cache", "show", "--no-all-versions"] + packages, capture_output=True, text=True,
                       timeout=120)
    found = set(re.findall(r"^Package: (\S+)$", p.stdout, re.M))
    missing = [package for package in packages if package not in found]
    assert not missing, f"not in Debian 12: {missing}\n{p.stderr}"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runtime_section_provides_every_library_the_binaries_link(name):
    """readelf's NEEDED entries of each binary the image copies, mapped to
    their Debian package (dpkg -S on this Debian 12 machine), must all be
    in the runtime section the image installs."""
    if not (shutil.which("readelf") and shutil.which("dpkg")):
        pytest.skip("readelf or dpkg is not installed")
    stage = runtime_stage(name)
    section = set(package_sections()[installed_sections(stage)[0]])
    binaries = [os.path.basename(s) for flags, sources, _, _ in copies(stage) if "from" in flags for s in sources]
    assert binaries, f"{name}: the runtime stage copies no program"
    for binary in binaries:
        path = BINARY_OF[binary]
        if not os.path.exists(path):
            pytest.skip(f"{path} is not built")
        dynamic = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
        needed = re.findall(r"\(NEEDED\).*\[(.+)\]", dynamic)
        assert needed, dynamic
        # One dpkg -S for all: lines are "package[:arch]: /path/soname".
        owners = subprocess.run(["dpkg", "-S"] + [f"*/{soname}" for soname in needed], capture_output=True,
                                text=True, timeout=120).stdout
        for soname in needed:
            packages = {line.split(":")[0].strip() for line in owners.splitlines()
                        if line.rstrip().endswith("/" + soname)}
            assert packages, f"{binary}: no installed package holds {soname}"
            assert packages & (section | BASE_PACKAGES), \
                f"{binary} needs {soname} from {sorted(packages)}, not in [{installed_sections(stage)[0]}]"


# -- runtime stage -----------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runtime_user_is_numeric_and_not_root(name):
    stage = runtime_stage(name)
    user = last(stage, "USER")
    assert user, f"{name}: the runtime stage runs as root"
    uid, _, gid = user.args.partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it without /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, user
    assert not gid or (gid.isdigit() and int(gid) != 0), user
    runs = " ".join(i.args for i in stage if i.keyword == "RUN" and i.line < user.line)
    assert re.search(rf"useradd\b[^&]*--uid {uid}\b", runs), f"{name}: no user created with uid {uid}"
    # Nothing after USER switches back.
    assert all(i.keyword != "USER" for i in stage if i.line > user.line)


def test_server_ports_volume_and_healthcheck():
    stage = runtime_stage("server")
    exposed = {w.split("/")[0] for i in stage if i.keyword == "EXPOSE" for w in i.args.split()}
    defaults = {help_default(SERVER_BIN, f) for f in ("http-port", "grpc-port", "metrics-port")}
    assert defaults == {"8000", "8001", "8002"}
    assert exposed == defaults
    volumes = [i for i in stage if i.keyword == "VOLUME"]
    assert volumes and "/models" in (volumes[0].exec_form() or volumes[0].args.split())
    check = last(stage, "HEALTHCHECK")
    argv = healthcheck_argv(check)
    assert argv[-1] == "http://127.0.0.1:8000/v2/health/live", check
    assert argv[0] in package_sections()["runtime-server"], f"{argv[0]} is not installed in the image"


def test_worker_port_and_healthcheck():
    stage = runtime_stage("worker")
    exposed = {w.split("/")[0] for i in stage if i.keyword == "EXPOSE" for w in i.args.split()}
    assert exposed == {help_default(WORKER_BIN, "metrics-port")} == {"8090"}
    argv = healthcheck_argv(last(stage, "HEALTHCHECK"))
    assert argv[-1] == "http://127.0.0.1:8090/healthz"
    assert argv[0] in package_sections()["runtime-worker"], f"{argv[0]} is not installed in the image"


def healthcheck_argv(instruction):
    assert instruction, "no HEALTHCHECK"
    words = instruction.args.split(" CMD ", 1)
    assert len(words) == 2, instruction
    argv = Instruction("CMD", words[1], instruction.line).exec_form()
    assert argv, f"{instruction!r}: use the exec form (slim images run it without a shell)"
    return argv


def entrypoint_argv(name):
    stage = runtime_stage(name)
    entrypoint, cmd = last(stage, "ENTRYPOINT"), last(stage, "CMD")
    assert entrypoint and cmd, f"{name}: needs ENTRYPOINT (the program) and CMD (its default arguments)"
    argv = entrypoint.exec_form() + cmd.exec_form()
    copied = {dest for flags, _, dest, _ in copies(stage) if "from" in flags}
    assert argv[0] in copied or os.path.dirname(argv[0]) + "/" in copied, f"{name}: {argv[0]} is not in the image"
    return argv


def test_server_default_command_is_accepted_by_the_real_server(tmp_path):
    argv = entrypoint_argv("server")
    assert argv == ["/usr/local/bin/imagen-server", "--model-repository=/models"]
    # --check-config parses exactly the image's arguments, then a wrong one
    # to show it really checks.
    p = subprocess.run([SERVER_BIN, "--check-config"] + argv[1:], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([SERVER_BIN, "--check-config", "--model-repository=/models", "--no-such-flag"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stderr


def test_worker_default_command_is_accepted_by_the_real_worker():
    argv = entrypoint_argv("worker")
    assert os.path.basename(argv[0]) == "imagen-worker"
    p = subprocess.run([WORKER_BIN, "--check-config"] + argv[1:], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    config = dict(line.split(": ", 1) for line in p.stdout.splitlines() if ": " in line)
    assert config["queue"].startswith("redis://"), p.stdout
    assert config["server"].startswith("grpc://") and config["server"].endswith(":8001"), p.stdout
    assert config["metrics_port"] == "8090" and config["metrics_address"] == "0.0.0.0", p.stdout


def test_server_healthcheck_command_succeeds_against_a_running_server(server_factory, repo):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    server = server_factory(repo)
    argv = healthcheck_argv(last(runtime_stage("server"), "HEALTHCHECK"))
    argv[-1] = argv[-1].replace(":8000/", f":{server.http_port}/")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    server.stop()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0, "the health check passes with no server"


def test_worker_healthcheck_command_succeeds_against_a_running_worker(worker_factory, tmp_path):  # noqa: F811
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    worker = worker_factory(f"sqlite://{tmp_path}/queue.db", "grpc://127.0.0.1:1")
    argv = healthcheck_argv(last(runtime_stage("worker"), "HEALTHCHECK"))
    argv[-1] = argv[-1].replace(":8090/", f":{worker.metrics_port}/")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr + worker.log()


# -- the thin worker image ---------------------------------------------------

def test_worker_image_has_no_server_no_backends_no_python():
    stage = runtime_stage("worker")
    copied = {os.path.basename(s) for flags, sources, _, _ in copies(stage) if "from" in flags for s in sources}
    assert copied == {"imagen-worker", "imagen"}
    for flags, sources, _, ins in copies(stage):
        if "from" not in flags:
            assert all(s.startswith("scripts/") for s in sources), ins
    packages = package_sections()["runtime-worker"]
    assert not [p for p in packages if "python" in p], packages
    text = " ".join(i.args for i in stage).lower()
    assert "python" not in text and "backend" not in text and ".so" not in text.replace(".sock", "")
    if shutil.which("apt-cache"):
        # Nothing the worker's packages depend on (hard dependencies, as
        # installed with --no-install-recommends) is Python either.
        p = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                            "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
                            "--important"] + packages, capture_output=True, text=True, timeout=120)
        if p.returncode == 0:
            closure = {line.strip() for line in p.stdout.splitlines() if not line.startswith(" ")}
            assert not [c for c in closure if c.startswith("python")], sorted(closure)


def test_server_image_holds_only_the_server():
    stage = runtime_stage("server")
    copied = {os.path.basename(s) for flags, sources, _, _ in copies(stage) if "from" in flags for s in sources}
    assert copied == {"imagen-server"}
