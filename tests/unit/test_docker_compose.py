"""No Docker engine runs here: check that docker-compose.yml parses and points at files that exist."""

import re
from pathlib import Path

import yaml

from asterisk.render_config import MARKER

ROOT = Path(__file__).resolve().parents[2]


def test_compose_parses_and_references_existing_files() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"asterisk", "postgres", "redis", "hilo"} <= set(services)
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        context = ROOT / (build if isinstance(build, str) else build["context"])
        dockerfile = context / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
        assert dockerfile.is_file(), f"service {name}: {dockerfile} missing"
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (context / source).exists(), f"{dockerfile}: COPY {source} does not exist"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"service {name}: volume {source} missing"
            else:
                assert source in compose["volumes"], f"service {name}: named volume {source} not declared"


def test_compose_gives_every_template_marker_a_value() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    data = yaml.safe_load(compose)
    env = dict(data["services"]["asterisk-config"]["environment"])
    markers = {m for f in (ROOT / "asterisk" / "etc").glob("*.conf") for m in MARKER.findall(f.read_text())}
    assert markers, "templates have markers"
    missing = {m for m in markers if f"HILO_{m}" not in env}
    assert not missing, f"asterisk-config lacks values for {sorted(missing)}"
    assert re.search(r"--src\W+/app/asterisk/etc", compose)
