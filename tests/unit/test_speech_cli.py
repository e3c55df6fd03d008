import json
import shutil
from pathlib import Path

import pytest

from server.cli import main
from speech.audio import read_wav, resample, write_wav

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
CHOICES = "billing,technical support,sales"


@needs_espeak
def test_say_then_recognize_at_8_and_16_khz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav8 = tmp_path / "ts.wav"
    assert main(["speech", "say", "technical support", "-o", str(wav8)]) == 0
    assert capsys.readouterr().out.strip() == str(wav8)  # only the file name on stdout
    assert read_wav(wav8).rate == 8000
    wav16 = tmp_path / "ts16.wav"
    write_wav(wav16, resample(read_wav(wav8), 16000))
    for wav in (wav8, wav16):
        assert main(["speech", "recognize", str(wav), "--lang", "en", "--choices", CHOICES]) == 0
        result = json.loads(capsys.readouterr().out)
        assert set(result) >= {"text", "choice", "confidence", "audio_seconds", "decode_seconds"}
        assert (result["choice"], result["engine"]) == ("technical support", "pocketsphinx")
        assert 0.5 <= result["confidence"] <= 1 and result["audio_seconds"] > 0.5


@needs_espeak
def test_without_choices_it_transcribes_and_chooses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = tmp_path / "x.wav"
    assert main(["speech", "say", "hello", "-o", str(wav)]) == 0
    capsys.readouterr()
    assert main(["speech", "recognize", str(wav)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["choice"] is None and isinstance(result["text"], str)


def test_errors_say_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["speech", "recognize", str(tmp_path / "none.wav")]) == 1
    assert "none.wav: no such file" in capsys.readouterr().err
    wav = tmp_path / "silence.wav"
    from speech.audio import Pcm

    write_wav(wav, Pcm(b"\0" * 16000, 8000))
    assert main(["speech", "recognize", str(wav), "--lang", "es", "--choices", "ventas"]) == 1
    assert "no speech engine recognizes 'es'" in capsys.readouterr().err
    assert main(["speech", "recognize", str(wav), "--choices", "sales,Sales!"]) == 0  # the same phrase twice is fine
    capsys.readouterr()
    assert main(["speech", "recognize", str(wav), "--choices", "sales", "--min-confidence", "2"]) == 2
    assert "--min-confidence" in capsys.readouterr().err


def test_engines_lists_each_language(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["speech", "engines"]) == 0
    listed = {e["engine"]: e["languages"] for e in json.loads(capsys.readouterr().out)}
    assert listed["pocketsphinx"]["en"] == "available"
    assert "HILO_VOSK_MODELS" in listed["vosk"]["es"]
