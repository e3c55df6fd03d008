"""docker-compose.yml and the images it runs, checked without a container engine: the file parses and points
at files that exist, every image is built on a local Debian base (no registry), stack/images.sh builds each,
the Hilo image gets every package of pyproject.toml with its data files; and the deployment is secure by
default: every secret is required (compose stops naming the one missing), SIP is published over TLS only with
the production profile rendered (TLS transport, phones on it with SRTP and their own generated passwords),
Hilo's plain HTTP only on loopback, `.env` kept out of git and images. (tests/packaging/test_compose.py runs
the stack for real where podman can.)"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from asterisk.render_config import MARKER, render_folder, templates
from tests.packaging.layout import ROOT, covered_by_package_data, data_files, package_dir, packages, pyproject


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(dockerfile: Path) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, f"{dockerfile}: ends with a continuation line"
    return found


def copy_sources(instruction: Instruction) -> list[str]:
    words = shlex.split(instruction.args)
    words = [w for w in words if not w.startswith("--")]
    return words[:-1]


def build_of(name: str, service: dict[str, Any]) -> tuple[Path, Path, dict[str, str]]:
    build = service.get("build")
    assert build is not None, f"service {name} has no build section: its image could not be made here"
    if isinstance(build, str):
        build = {"context": build}
    context = ROOT / build["context"]
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    return context, dockerfile, dict(build.get("args") or {})


def test_compose_parses_and_references_existing_files() -> None:
    data = compose()
    services = data["services"]
    assert {"asterisk", "postgres", "redis", "hilo"} <= set(services)
    for name, service in services.items():
        context, dockerfile, _ = build_of(name, service)
        assert dockerfile.is_file(), f"service {name}: {dockerfile} missing"
        for instruction in instructions(dockerfile):
            if instruction.keyword in ("COPY", "ADD") and "--from" not in instruction.args:
                for source in copy_sources(instruction):
                    assert (context / source).exists(), f"{dockerfile}: {instruction.keyword} {source} does not exist"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("${"):  # a host folder the operator names (required, see below)
                continue
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"service {name}: volume {source} missing"
            else:
                assert source in data["volumes"], f"service {name}: named volume {source} not declared"


LOCAL_BASE = re.compile(r"^\$\{HILO_BASE_(BOOKWORM|SID):-localhost/hilo-base:(bookworm|sid)\}$")


def test_every_image_is_built_on_a_local_base() -> None:
    """No registry is needed: each service's image is a local one built FROM the base stack/images.sh makes
    (an ARG BASE that compose sets, overridable with HILO_BASE_BOOKWORM / HILO_BASE_SID)."""
    for name, service in compose()["services"].items():
        assert str(service.get("image", "")).startswith("localhost/"), f"service {name}: not a local image"
        _, dockerfile, args = build_of(name, service)
        match = LOCAL_BASE.match(args.get("BASE", ""))
        assert match, f"service {name}: build arg BASE must default to a localhost/hilo-base image: {args}"
        assert match.group(1).lower() == match.group(2), f"service {name}: {args['BASE']}"
        steps = instructions(dockerfile)
        arg = next((s for s in steps if s.keyword == "ARG" and s.args.startswith("BASE=")), None)
        assert arg is not None and arg.args == f"BASE=localhost/hilo-base:{match.group(2)}", (
            f"{dockerfile}: ARG BASE=localhost/hilo-base:{match.group(2)} before the first FROM"
        )
        stages = set()
        for step in steps:
            if step.keyword == "FROM":
                words = step.args.split()
                assert words[0] == "${BASE}" or words[0] in stages, f"{dockerfile}: FROM {words[0]} needs a registry"
                if len(words) == 3 and words[1].upper() == "AS":
                    stages.add(words[2])


def images_script_specs() -> dict[str, tuple[str, str, str]]:
    """stack/images.sh's SERVICE_IMAGES: image -> (context, dockerfile, base suite)."""
    text = (ROOT / "stack" / "images.sh").read_text()
    block = re.search(r"^SERVICE_IMAGES=\((.*?)^\)", text, re.S | re.M)
    assert block, "stack/images.sh has no SERVICE_IMAGES"
    specs = {}
    for line in block.group(1).splitlines():
        words = shlex.split(line)
        if words:
            image, context, dockerfile, suite = words[0].split()
            specs[image] = (context, dockerfile, suite)
    return specs


def test_images_script_builds_every_compose_image() -> None:
    specs = images_script_specs()
    built = set()
    for name, service in compose()["services"].items():
        context, dockerfile, args = build_of(name, service)
        image = service["image"]
        assert image in specs, f"service {name}: stack/images.sh does not build {image}"
        want_context, want_dockerfile, suite = specs[image]
        assert (ROOT / want_context).resolve() == context.resolve(), f"{image}: contexts differ"
        assert (ROOT / want_context / want_dockerfile).resolve() == dockerfile.resolve(), f"{image}: Dockerfiles differ"
        assert args["BASE"].endswith(f"localhost/hilo-base:{suite}}}"), f"{image}: stack/images.sh builds it on {suite}"
        built.add(image)
    assert built == set(specs), f"stack/images.sh builds images compose does not use: {set(specs) - built}"


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (exclude?, regex) rules, Docker's syntax: `*` within a path segment, `**` across
    segments, `!` re-includes; a rule that matches a folder matches everything under it."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((exclude, re.compile(regex + "(?:/.*)?")))
    return rules


def dockerignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    ignored = False
    for exclude, regex in rules:
        if regex.fullmatch(path):
            ignored = exclude
    return ignored


def test_dockerignore_rules_follow_docker_syntax() -> None:
    rules = [(True, r) for _, r in dockerignore_rules()]
    assert dockerignored(".run/env", rules)
    assert dockerignored("console/__pycache__/api.cpython-311.pyc", rules)
    assert not dockerignored("console/static/agent.js", rules)


def test_hilo_image_gets_every_package_and_data_file() -> None:
    """The Hilo image installs the whole build context (no package named in the Dockerfile) after the locked
    dependencies, and .dockerignore keeps no file of any package, nor what the build reads, out of it."""
    service = compose()["services"]["hilo"]
    context, dockerfile, _ = build_of("hilo", service)
    assert context.resolve() == ROOT
    steps = instructions(dockerfile)
    copies = [s for s in steps if s.keyword == "COPY"]
    whole = [copy_sources(c) for c in copies if copy_sources(c) == ["."]]
    assert whole, f"{dockerfile} must COPY the whole context (`COPY . <dir>`), not chosen packages"
    destination = shlex.split(next(c for c in copies if copy_sources(c) == ["."]).args)[-1]
    runs = " ".join(s.args for s in steps if s.keyword == "RUN")
    assert re.search(r"pip install --require-hashes -r \S*requirements\.lock", runs), "locked dependencies"
    assert re.search(rf"pip install --no-deps( --no-build-isolation)? {re.escape(destination)}", runs), (
        f"{dockerfile} must pip install the copied context {destination} without dependencies"
    )
    for name, service_ in compose()["services"].items():
        if service_["image"] == service["image"]:
            assert build_of(name, service_)[1] == dockerfile, f"service {name}: same image, other Dockerfile"

    rules = dockerignore_rules()
    readme = pyproject()["project"].get("readme")
    needed = ["pyproject.toml", "requirements.lock", *([readme] if isinstance(readme, str) else [])]
    for path in needed:
        assert not dockerignored(path, rules), f".dockerignore leaves out {path}, which the build reads"
    for package in packages():
        init = package_dir(package).relative_to(ROOT) / "__init__.py"
        assert not dockerignored(init.as_posix(), rules), f".dockerignore leaves out the package {package}"
    for item in data_files():
        assert not dockerignored(item.path, rules), f".dockerignore leaves out {item.path} ({item.package})"


def test_package_data_covers_every_tracked_data_file() -> None:
    """Every file git tracks in a package folder that is not Python is in the wheel (so in the image):
    [tool.setuptools.package-data] takes it."""
    items = data_files()
    assert any(i.path.endswith(".sql") for i in items), "the migrations are package data"
    missing = [i.path for i in items if not covered_by_package_data(i)]
    assert not missing, f"not in [tool.setuptools.package-data] of pyproject.toml: {missing}"


def test_compose_gives_every_template_marker_a_value() -> None:
    data = compose()
    config = data["services"]["asterisk-config"]
    env = dict(config["environment"])
    etc = ROOT / "asterisk" / "etc"
    markers = {m for f in templates(etc, production=True) for m in MARKER.findall(f.read_text())}
    assert {"SIP_TLS_PORT", "SIP_TLS_DIR"} <= markers, "the production profile's templates have markers"
    missing = {m for m in markers if f"HILO_{m}" not in env}
    assert not missing, f"asterisk-config lacks values for {sorted(missing)}"
    # the templates it renders are the installed package's (package data), with the production profile, into
    # the volume Asterisk reads
    command = " ".join(config["command"])
    out = re.search(r"python -m asterisk\.render_config --production --out (\S+)", command)
    assert out, command
    mounts = {v.split(":")[0]: v.split(":")[1] for v in config["volumes"]}
    assert out.group(1) in mounts.values()
    asterisk_mounts = {v.split(":")[0]: v.split(":")[1] for v in data["services"]["asterisk"]["volumes"]}
    volume = next(k for k, v in mounts.items() if v == out.group(1))
    start = (ROOT / build_of("asterisk", data["services"]["asterisk"])[0] / "start.sh").read_text()
    assert f"src={asterisk_mounts[volume]}" in start, "Asterisk starts on the rendered files"


# What compose must be given, each with a message that names it (`${VAR:?set VAR ...}`), and where.
REQUIRED = {
    "HILO_ARI_PASSWORD": "asterisk-config",
    "HILO_AMI_PASSWORD": "asterisk-config",
    "HILO_DB_PASSWORD": "postgres",
    "HILO_REDIS_PASSWORD": "redis",
    "HILO_MEDIA_ADDR": "asterisk-config",
    "HILO_API_TOKEN": "hilo",
    "HILO_METRICS_TOKEN": "hilo",
    "HILO_SECRET_PEPPER": "hilo",
    "HILO_RECORDING_KEYS": "hilo",
    "HILO_RECORDING_KEY_ID": "hilo",
    "HILO_TRUSTED_PROXIES": "hilo",
    "HILO_SIP_TLS_CERTS": "asterisk",
}
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolated(value: Any) -> list[tuple[str, str, str]]:
    """Every `${NAME}`, `${NAME:-default}` and `${NAME:?message}` in a compose value: (name, kind, text)."""
    if isinstance(value, dict):
        return [found for v in value.values() for found in interpolated(v)]
    if isinstance(value, list):
        return [found for v in value for found in interpolated(v)]
    if isinstance(value, str):
        return [(m.group(1), m.group(2) or "", m.group(3) or "") for m in INTERPOLATION.finditer(value)]
    return []


def test_every_secret_and_address_is_required_with_a_message_naming_it() -> None:
    services = compose()["services"]
    for name, service in REQUIRED.items():
        found = [(kind, text) for n, kind, text in interpolated(services[service]) if n == name]
        assert found, f"service {service} does not take {name}"
        assert all(kind == "?" for kind, _ in found), f"{service}: {name} has a default or none required: {found}"
        assert all(text.startswith(f"set {name}") for _, text in found), f"{service}: {name}: {found}"
    # the value reaches the program, under its own name where it is a setting of Hilo's
    hilo = services["hilo"]["environment"]
    for name in ("HILO_METRICS_TOKEN", "HILO_SECRET_PEPPER", "HILO_TRUSTED_PROXIES", "HILO_RECORDING_KEYS"):
        assert hilo[name].startswith(f"${{{name}:?"), (name, hilo[name])
    # and nothing anywhere falls back to a default secret (a plain `${NAME}` is one required above)
    for name, kind, text in interpolated(compose()):
        if re.search(r"PASSWORD|TOKEN|PEPPER|KEYS|CERTS", name) and name != "HILO_SECRET_PEPPER_PREVIOUS":
            assert kind == "?" or (kind == "" and name in REQUIRED), (name, kind, text)


def test_sip_is_published_over_tls_only_and_http_on_loopback() -> None:
    services = compose()["services"]
    published = services["asterisk"]["ports"]
    assert [p for p in published if p.endswith(":5061/tcp")], published
    assert not [p for p in published if "5060" in p], f"plain SIP is published: {published}"
    assert all(p.startswith("${HILO_PUBLISH_ADDR:-0.0.0.0}:") for p in published)
    [http] = services["hilo"]["ports"]
    assert http.startswith("${HILO_HTTP_PUBLISH_ADDR:-127.0.0.1}:"), "plain HTTP for the TLS proxy on the host only"
    for name, service in services.items():
        if name not in ("asterisk", "hilo"):
            assert not service.get("ports"), f"service {name} publishes {service['ports']}"
    # The certificate folder is mounted read-only where start.sh installs it from, into the folder the
    # production profile's transport reads.
    mounts = {v.rsplit(":", 2)[1]: v for v in services["asterisk"]["volumes"] if v.startswith("${HILO_SIP_TLS_CERTS")}
    assert list(mounts) == ["/etc/asterisk-tls"] and mounts["/etc/asterisk-tls"].endswith(":ro")
    tls_dir = services["asterisk-config"]["environment"]["HILO_SIP_TLS_DIR"]
    start = (ROOT / "containers" / "asterisk" / "start.sh").read_text()
    assert "tls=/etc/asterisk-tls" in start and f'"$tls/sip.crt" "$tls/sip.key" {tls_dir}/' in start
    dockerfile = (ROOT / "containers" / "asterisk" / "Dockerfile").read_text()
    assert "ca-certificates" in dockerfile, "the CAs hilo-tls.conf checks trunks' certificates against"


def test_the_production_profile_is_rendered_with_tls(tmp_path: Path) -> None:
    """What the asterisk-config service renders, with compose's environment: the TLS transport on 5061 reading
    the certificate start.sh installs, and pjsip.conf including it."""
    config = compose()["services"]["asterisk-config"]
    env = {k: str(v) for k, v in config["environment"].items()}
    env = {k: ("secret" if "${" in v else v) for k, v in env.items()}
    render_folder(ROOT / "asterisk" / "etc", tmp_path, env, production=True)
    tls = (tmp_path / "hilo-tls.conf").read_text()
    assert "[transport-tls]\ntype=transport\nprotocol=tls\nbind=0.0.0.0:5061\n" in tls
    assert f"cert_file={env['HILO_SIP_TLS_DIR']}/sip.crt\npriv_key_file={env['HILO_SIP_TLS_DIR']}/sip.key\n" in tls
    assert "[carrier-tls-endpoint](!,carrier-endpoint)\ntransport=transport-tls\nmedia_encryption=sdes\n" in tls
    assert '#tryinclude "hilo-tls.conf"' in (tmp_path / "pjsip.conf").read_text()


def test_phones_are_rendered_on_tls_with_passwords_generated_into_a_volume() -> None:
    services = compose()["services"]
    config, hilo = services["asterisk-config"], services["hilo"]
    steps = [s.strip() for s in config["command"][2].split("&&")]
    new, render = (
        steps.index("hilo phones new-secrets"),
        steps.index("hilo phones render --output /etc/asterisk-hilo/hilo-phones.conf"),
    )
    assert new < render < steps.index("touch /etc/asterisk-hilo/.ready")
    secrets_file = config["environment"]["HILO_PHONE_SECRETS_FILE"]
    assert hilo["environment"]["HILO_PHONE_SECRETS_FILE"] == secrets_file  # `hilo phones show` reads it
    folder = str(Path(secrets_file).parent)
    written = [v for v in config["volumes"] if v.split(":")[1] == folder]
    read = [v for v in hilo["volumes"] if v.split(":")[1] == folder]
    assert len(written) == 1 and len(read) == 1 and read[0] == written[0] + ":ro"
    assert written[0].split(":")[0] in compose()["volumes"], "a named volume of its own"
    assert "asterisk" not in {s for s, svc in services.items() if any(folder in v for v in svc.get("volumes", []))}
    for service in (config, hilo):  # phones rendered on TLS with SRTP, and `show` says so
        assert int(service["environment"]["HILO_SIP_TLS_PORT"]) == 5061


def test_the_env_file_is_kept_out_of_git_and_images() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert dockerignored(".env", dockerignore_rules())


def test_no_secret_is_on_a_command_line() -> None:
    """A service's command line is readable by every process of the host (ps): no password is put there."""
    for name, service in compose()["services"].items():
        command = service.get("command") or []
        text = command if isinstance(command, str) else " ".join(command)
        # `${VAR}` is filled in by compose (so the value lands in argv); `$$VAR` is left to the shell.
        assert not re.search(r"(?<!\$)\$\{?HILO_\w*(PASSWORD|TOKEN|SECRET|KEYS?)\b", text), (name, text)


def test_redis_gets_its_password_from_a_private_file(tmp_path: Path) -> None:
    """Run the redis service's command with a stand-in redis-server that reports what it was given."""
    import os
    import stat
    import subprocess

    command = compose()["services"]["redis"]["command"]
    assert command[:2] == ["sh", "-c"]
    script = command[2].replace("$$", "$").replace("/tmp/redis.conf", str(tmp_path / "redis.conf"))
    fake = tmp_path / "bin" / "redis-server"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/../argv"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "HILO_REDIS_PASSWORD": "s3cret-pw"}
    subprocess.run(["sh", "-c", script], env=env, check=True, timeout=30)
    argv = (tmp_path / "argv").read_text()
    assert "s3cret-pw" not in argv and argv.strip() == str(tmp_path / "redis.conf")
    config = tmp_path / "redis.conf"
    assert 'requirepass "s3cret-pw"' in config.read_text().splitlines()
    assert "appendonly yes" in config.read_text().splitlines()
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
