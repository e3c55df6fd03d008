"""`hilo speech recognize|say|engines`: recognize a WAV file, speak text to one, list what can recognize what.

Example::

    hilo speech recognize call.wav --lang en --choices "billing,technical support,sales"
    {"engine": "pocketsphinx", "language": "en", "text": "sales", "choice": "sales", "confidence": 0.98, ...}
    hilo speech say "technical support" -o ts.wav --lang en"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from hilo.settings import Settings
from speech.audio import AudioError, is_narrowband, read_wav
from speech.engines import EngineUnavailable, recognize_pcm
from speech.listener import SpeechService
from speech.matching import Grammar, GrammarError
from speech.tts import TtsError, synthesize_wav, voice_for


def add_speech_commands(subparsers: Any) -> None:
    speech = subparsers.add_parser("speech", help="speech recognition and synthesis tools")
    sub = speech.add_subparsers(dest="speech_command", required=True)
    recognize = sub.add_parser("recognize", help="recognize a mono 16-bit WAV (8 or 16 kHz); prints one JSON object")
    recognize.add_argument("file", type=Path)
    recognize.add_argument("--lang", default="en", help="language (default en)")
    recognize.add_argument("--choices", default=None, help='comma-separated phrases, e.g. "billing,technical support"')
    recognize.add_argument(
        "--digits", default=None, metavar="MIN-MAX", help='spoken digits instead of choices, e.g. "4-8" ("four two...")'
    )
    recognize.add_argument("--engine", default=None, help="pocketsphinx or vosk (default: the language's engine)")
    recognize.add_argument("--min-confidence", type=float, default=0.5, help="below this, no choice (default 0.5)")
    say = sub.add_parser("say", help="speak TEXT into a WAV file (8 kHz mono 16-bit, as Asterisk plays it)")
    say.add_argument("text")
    say.add_argument("-o", "--output", type=Path, required=True)
    say.add_argument("--lang", default="en")
    say.add_argument("--voice", default=None, help="an espeak-ng voice, e.g. gmw/en-US or roa/es")
    sub.add_parser("engines", help="which engine can recognize which language here, and why not")


def run_speech_command(args: argparse.Namespace, settings: Settings) -> int:
    service = SpeechService.from_config(settings.vosk_models, settings.speech_engines)
    if args.speech_command == "engines":
        print(json.dumps(service.engines.describe(sorted({"en", "es", *settings.vosk_models})), ensure_ascii=False))
        return 0
    if args.speech_command == "say":
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the espeak driver chats on stdout
                synthesize_wav(args.text, voice_for(args.lang, args.voice), args.output)
        except TtsError as exc:
            print(f"hilo speech say: {exc}", file=sys.stderr)
            return 1
        print(args.output)
        return 0
    return _recognize(args, service)


def _recognize(args: argparse.Namespace, service: SpeechService) -> int:
    if not 0 <= args.min_confidence <= 1:
        print("hilo speech recognize: --min-confidence must be between 0 and 1", file=sys.stderr)
        return 2
    try:
        pcm = read_wav(args.file)
        grammar = _grammar(args)
        engine = service.engines.pick(args.lang, args.engine)
        recognizer = engine.recognizer(args.lang, grammar)
        result = recognize_pcm(
            engine,
            recognizer,
            pcm,
            grammar,
            language=args.lang,
            min_confidence=args.min_confidence,
            narrowband=is_narrowband(pcm),
        )
    except (AudioError, EngineUnavailable) as exc:
        print(f"hilo speech recognize: {exc}", file=sys.stderr)
        return 1
    except GrammarError as exc:
        print(f"hilo speech recognize: {'--digits' if args.digits else '--choices'}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_json(), ensure_ascii=False))
    return 0


def _grammar(args: argparse.Namespace) -> Grammar | None:
    if args.digits is not None and args.choices is not None:
        raise GrammarError("give --choices or --digits, not both")
    if args.digits is not None:
        low, sep, high = args.digits.partition("-")
        if not (low.isdigit() and (not sep or high.isdigit())):
            raise GrammarError(f"{args.digits!r} is not MIN-MAX (e.g. 4-8) or a count (e.g. 4)")
        return Grammar.digits(args.lang, int(low), int(high) if sep else int(low))
    return Grammar.of_phrases(args.choices.split(",")) if args.choices is not None else None
