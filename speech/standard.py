"""The speech engines a Hilo server runs with, from its settings: vosk for the languages it has a model for,
pocketsphinx (English, out of the box) otherwise. One recipe, for the call path and for the process that
decodes recordings' transcripts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from speech.engines import SpeechEngines
from speech.pocketsphinx_engine import PocketsphinxEngine
from speech.vosk_engine import VoskEngine


def standard_engines(vosk_models: Mapping[str, Path], preferred: Mapping[str, str]) -> SpeechEngines:
    return SpeechEngines([VoskEngine(dict(vosk_models)), PocketsphinxEngine()], dict(preferred))
