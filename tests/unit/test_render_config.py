import re
from pathlib import Path

import pytest

from asterisk.render_config import TemplateError, render_folder, render_text

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
