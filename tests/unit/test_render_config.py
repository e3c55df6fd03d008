import os
import re
from pathlib import Path

import pytest

from asterisk.render_config import TemplateError, main, render_folder, render_text, templates

ETC = Path(__file__).resolve().parents[2] / "asterisk" / "etc"


def test_markers_take_environment_values() -> None:
    assert render_text("bindaddr=@@BIND_ADDR@@\n", {"HILO_BIND_ADDR": "127.0.0.1"}) == "bindaddr=127.0.0.1\n"


def test_unknown_marker_names_file_line_and_variable() -> None:
    with pytest.raises(TemplateError, match=r"http.conf:2: @@NOPE@@ needs environment variable HILO_NOPE"):
        render_text("[general]\nx=@@NOPE@@\n", {}, "http.conf")


def test_shipped_templates_render_to_loopback_only(tmp_path: Path) -> None:
    markers = {m for f in ETC.glob("*.conf") for m in re.findall(r"@@([A-Z0-9_]+)@@", f.read_text())}
    env = {f"HILO_{m}": f"value-{m.lower()}" for m in markers}
    env.update(HILO_BIND_ADDR="127.0.0.1", HILO_MEDIA_ADDR="127.0.0.1", HILO_AMI_PERMIT="127.0.0.0/255.0.0.0")
    written = render_folder(ETC, tmp_path, env)
    assert {p.name for p in written} >= {"http.conf", "ari.conf", "manager.conf", "pjsip.conf", "extensions.conf"}
    text = "\n".join(p.read_text() for p in written)
    assert "@@" not in text
    assert "0.0.0.0:" not in text and "bindaddr=0.0.0.0" not in text.replace(" ", "")
    assert "Stasis(${HILO_APP},${EXTEN})" in (tmp_path / "extensions.conf").read_text()


def test_ami_streams_only_the_events_hilo_handles() -> None:
    """Calls reach Hilo through ARI, for its own app: an AMI `call`/`dialplan`/`cdr` class would stream
    every channel of the box to Hilo (its CPU at a peak, spent on calls it does not handle)."""
    text = (ETC / "manager.conf").read_text()
    reads = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("read=")]
    assert reads == ["system,security"]


def test_sip_over_tls_is_in_the_production_profile_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    markers = {m for f in templates(ETC, production=True) for m in re.findall(r"@@([A-Z0-9_]+)@@", f.read_text())}
    env = {f"HILO_{m}": f"value-{m.lower()}" for m in markers}
    env.update(HILO_BIND_ADDR="0.0.0.0", HILO_SIP_TLS_PORT="5061", HILO_SIP_TLS_DIR="/etc/asterisk/keys/hilo")  # noqa: S104 (compose)
    local = {p.name for p in render_folder(ETC, tmp_path / "local", env)}
    assert "hilo-tls.conf" not in local and "pjsip.conf" in local
    monkeypatch.setattr(os, "environ", env)  # what `python -m asterisk.render_config` reads
    assert main(["--out", str(tmp_path / "production"), "--production"]) == 0
    assert {p.name for p in (tmp_path / "production").iterdir()} == local | {"hilo-tls.conf"}
    del env["HILO_SIP_TLS_DIR"]
    assert main(["--out", str(tmp_path / "again"), "--production"]) == 2  # named: hilo-tls.conf's line, the variable
    tls = (tmp_path / "production" / "hilo-tls.conf").read_text()
    assert "protocol=tls\nbind=0.0.0.0:5061\n" in tls
    assert "cert_file=/etc/asterisk/keys/hilo/sip.crt\npriv_key_file=/etc/asterisk/keys/hilo/sip.key\n" in tls
    assert "method=tlsv1_2\n" in tls and "verify_server=yes\n" in tls
    # pjsip.conf includes it last, once the templates it builds on (carrier-endpoint) are defined
    pjsip = (tmp_path / "local" / "pjsip.conf").read_text()
    assert pjsip.rstrip().endswith('#tryinclude "hilo-tls.conf"')
    assert pjsip.index("[carrier-endpoint](!,media-options)") < pjsip.index('#tryinclude "hilo-tls.conf"')
