"""The Hilo server's CPU for one second of a caller listened to: 50 RTP packets of slin16 silence (20 ms
each) through the receiver (parse, order, byte swap, queue) and the endpointer, as `speech.listener` does
while the caller is silent (no recognizer runs then). No call, no socket: the event loop's own cost per
packet (the datagram's read, the listener's wake-up) is not in it.

    .run/venv/bin/python -m bench.listening_cpu [--seconds 200]"""

from __future__ import annotations

import argparse
import ipaddress
import struct
import sys
import time

from speech.media import RATE, RtpReceiver
from speech.vad import Endpointer

SOURCE = ("127.0.0.1", 4000)


def _packet(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 118, seq % 65536, seq * 320 % 2**32, 1234) + bytes(640)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.listening_cpu", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=200, help="seconds of audio (default 200)")
    seconds = parser.parse_args(argv).seconds
    receiver = RtpReceiver()
    receiver.expect((ipaddress.ip_address(SOURCE[0]), SOURCE[1]))
    endpointer = Endpointer(RATE, end_silence_s=0.6, max_speech_s=8.0)
    packets = [_packet(i) for i in range(50 * seconds)]
    cpu = time.process_time()
    for packet in packets:
        receiver.datagram_received(packet, SOURCE)
        endpointer.feed(receiver.frames.get_nowait() or b"")
    cpu = time.process_time() - cpu
    print(f"{cpu * 1000 / seconds:.2f} ms CPU per second listened ({cpu * 1e6 / len(packets):.1f} us a packet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
