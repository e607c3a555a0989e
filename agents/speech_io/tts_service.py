#!/usr/bin/env python3
"""TTSService: text-to-speech through espeak-ng, as a JSON-lines process agent.

Protocol (DESIGN section 7, `process` runtime, `jsonl`):

- on start: `{"ready": true}`, or `{"unavailable": "..."}` and exit 0 when
  espeak-ng is not installed;
- in, one JSON object per line: `{"id": ..., "input": TEXT}` or
  `{"id": ..., "input": {"text": TEXT, "voice": "en-us", "speed": 175}}`
  (`voice` and `speed`, in words per minute, are optional);
- out, one JSON object per line: `{"id": ..., "output": {"wav_base64",
  "sample_rate", "duration_seconds", "bytes"}}`, or `{"id": ..., "error":
  {"code": "tts_failed" | "malformed_json", "message": ...}}`.

The program exits with status 0 at end of input or on SIGTERM. Standard
library only.
"""

import base64
import io
import json
import shutil
import signal
import struct
import subprocess
import sys
import wave

ESPEAK = "espeak-ng"
# Seconds one synthesis may take before it is abandoned.
SYNTH_TIMEOUT_SECONDS = 60
# espeak-ng accepts 80..450 words per minute (its documented range).
MIN_SPEED_WPM = 80
MAX_SPEED_WPM = 450
# Longest text accepted in one request, in characters.
MAX_TEXT_CHARS = 20000


class TtsError(Exception):
    """A request that could not be turned into speech; its text is the message."""


def emit(obj):
    """Write one JSON line to stdout and flush it."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def parse_request(value):
    """Return (text, voice, speed) from a request's `input`."""
    voice = None
    speed = None
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):
        text = value.get("text")
        if not isinstance(text, str):
            raise TtsError("input.text must be a string")
        voice = value.get("voice")
        if voice is not None and (not isinstance(voice, str) or not voice.strip()):
            raise TtsError("input.voice must be a non-empty string")
        speed = value.get("speed")
        if speed is not None:
            if isinstance(speed, bool) or not isinstance(speed, (int, float)):
                raise TtsError("input.speed must be a number (words per minute)")
            if not MIN_SPEED_WPM <= speed <= MAX_SPEED_WPM:
                raise TtsError(
                    f"input.speed must be between {MIN_SPEED_WPM} and {MAX_SPEED_WPM} words per minute"
                )
            speed = int(round(speed))
    else:
        raise TtsError("input must be a string or an object with a text field")
    if not text.strip():
        raise TtsError("text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise TtsError(f"text is longer than {MAX_TEXT_CHARS} characters")
    return text, voice, speed


def find_data_chunk(wav):
    """Return (offset, declared_size) of the `data` chunk of a RIFF/WAVE file."""
    if len(wav) < 12 or wav[0:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise TtsError("espeak-ng did not produce a WAV file")
    pos = 12
    while pos + 8 <= len(wav):
        chunk_id = wav[pos:pos + 4]
        (size,) = struct.unpack_from("<I", wav, pos + 4)
        if chunk_id == b"data":
            return pos + 8, size
        pos += 8 + size + (size & 1)
    raise TtsError("WAV output has no data chunk")


def wav_summary(wav):
    """Check a WAV produced on a pipe and return (fixed_wav, sample_rate, frames).

    espeak-ng writing to a pipe cannot seek back to fill in the RIFF and data
    lengths, so they hold placeholders; the frame count is computed from the
    bytes actually received and the lengths are rewritten in the copy returned.
    """
    try:
        with wave.open(io.BytesIO(wav), "rb") as w:
            rate = w.getframerate()
            frame_bytes = w.getsampwidth() * w.getnchannels()
    except (wave.Error, EOFError) as e:
        raise TtsError(f"unreadable WAV output: {e}") from None
    if rate <= 0 or frame_bytes <= 0:
        raise TtsError("WAV output has an invalid format header")
    offset, declared = find_data_chunk(wav)
    available = len(wav) - offset
    data_len = min(declared, available)
    data_len -= data_len % frame_bytes
    if data_len == 0:
        raise TtsError("espeak-ng produced no audio")
    fixed = bytearray(wav[:offset + data_len])
    struct.pack_into("<I", fixed, 4, len(fixed) - 8)
    struct.pack_into("<I", fixed, offset - 4, data_len)
    return bytes(fixed), rate, data_len // frame_bytes


def synthesize(text, voice, speed):
    """Run espeak-ng (no shell) and return the output object."""
    cmd = [ESPEAK, "--stdout"]
    if voice is not None:
        cmd += ["-v", voice]
    if speed is not None:
        cmd += ["-s", str(speed)]
    cmd += ["--", text]
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=SYNTH_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TtsError(f"espeak-ng took longer than {SYNTH_TIMEOUT_SECONDS} s") from None
    except OSError as e:
        raise TtsError(f"cannot run espeak-ng: {e}") from None
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        raise TtsError(f"espeak-ng exited with status {proc.returncode}: {stderr or 'no message'}")
    if not proc.stdout:
        raise TtsError(f"espeak-ng produced no output{': ' + stderr if stderr else ''}")
    wav, rate, frames = wav_summary(proc.stdout)
    return {
        "wav_base64": base64.b64encode(wav).decode("ascii"),
        "sample_rate": rate,
        "duration_seconds": round(frames / rate, 3),
        "bytes": len(wav),
    }


def handle_line(line):
    """Answer one input line (already stripped, not empty)."""
    try:
        request = json.loads(line)
    except ValueError as e:
        emit({"id": None, "error": {"code": "malformed_json", "message": f"invalid JSON: {e}"}})
        return
    if not isinstance(request, dict):
        emit({"id": None, "error": {"code": "malformed_json", "message": "each line must be a JSON object"}})
        return
    if "cancel" in request:
        return  # agentvisor's cancel notice: synthesis is short and sequential, nothing to stop
    request_id = request.get("id")
    try:
        if "input" not in request:
            raise TtsError("missing field: input")
        text, voice, speed = parse_request(request["input"])
        emit({"id": request_id, "output": synthesize(text, voice, speed)})
    except TtsError as e:
        emit({"id": request_id, "error": {"code": "tts_failed", "message": str(e)}})
    except Exception as e:  # noqa: BLE001 - every request gets an answer
        emit({"id": request_id, "error": {"code": "tts_failed", "message": f"{type(e).__name__}: {e}"}})


def on_sigterm(_signum, _frame):
    raise SystemExit(0)


def main():
    signal.signal(signal.SIGTERM, on_sigterm)
    # A stray non-UTF-8 byte must cost one request, not the whole process.
    sys.stdin.reconfigure(encoding="utf-8", errors="replace")
    try:
        if shutil.which(ESPEAK) is None:
            emit({"unavailable": "espeak-ng not found: install the espeak-ng package"})
            return 0
        emit({"ready": True})
        for raw in sys.stdin:
            line = raw.strip()
            if line:
                handle_line(line)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    sys.exit(code)
