"""PIOPIY's wire: PCMO builders against TeleCMI's SDK, and the stream codec."""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from piopiy.action import Action, StreamAction

from agent.telephony.piopiy.codec import (
    PcmoFrame,
    PiopiyFormatError,
    StreamAudio,
    StreamControl,
    StreamDecoder,
    StreamMetadata,
    UnknownText,
    bridge_action,
    decode_outbound,
    encode_control,
    encode_pcmo,
    encode_stream_audio,
    hangup_action,
    input_action,
    param_action,
    play_action,
    play_get_input_action,
    record_action,
    speak_action,
    stream_action,
)

WS = "wss://hotline.example.com/stream?call=c1&token=t0k"
DTMF_URL = "https://hotline.example.com/piopiy/dtmf"
PIOPIY_NUMBER = 918035000000
AGENT_1 = 919876543210
AGENT_2 = 14155550123

# ---------------------------------------------------------------------- PCMO builders vs the SDK

# (ours, what the SDK is told to do). The SDK only emits listen_mode/voice_quality/stream_on_answer
# and max_digit/max_retry/timeout when given an options dict, so it always gets one: that is our shape.
BUILDER_CASES: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[Any], None]]] = {
    "stream defaults": (
        lambda: stream_action(WS),
        lambda a: a.stream(WS, {"listen_mode": "caller", "voice_quality": "8000", "stream_on_answer": True}),
    ),
    "stream 16k both, not on answer": (
        lambda: stream_action(WS, listen_mode="both", voice_quality=16000, stream_on_answer=False),
        lambda a: a.stream(WS, {"listen_mode": "both", "voice_quality": "16000", "stream_on_answer": False}),
    ),
    "stream callee, rate as a string": (
        lambda: stream_action("ws://10.0.0.5:8080/s", listen_mode="callee", voice_quality="16000"),
        lambda a: a.stream(
            "ws://10.0.0.5:8080/s",
            {"listen_mode": "callee", "voice_quality": "16000", "stream_on_answer": True},
        ),
    ),
    "play url": (
        lambda: play_action("https://cdn.example.com/hold.mp3"),
        lambda a: a.playMusic("https://cdn.example.com/hold.mp3"),
    ),
    "play stored file": (lambda: play_action("welcome.wav"), lambda a: a.playMusic("welcome.wav")),
    "speak": (lambda: speak_action("Connecting you now"), lambda a: a.speak("Connecting you now")),
    "param": (lambda: param_action('{"bot":"support"}'), lambda a: a.setValue('{"bot":"support"}')),
    "record": (record_action, lambda a: a.record()),
    "hangup": (hangup_action, lambda a: a.hangup()),
    "bridge one number, SDK defaults": (
        lambda: bridge_action(PIOPIY_NUMBER, [AGENT_1]),
        lambda a: a.call(AGENT_1, PIOPIY_NUMBER),
    ),
    "bridge list, one by one": (
        lambda: bridge_action(PIOPIY_NUMBER, [AGENT_1, AGENT_2], duration=600, timeout=20, loop=2),
        lambda a: a.call([AGENT_1, AGENT_2], PIOPIY_NUMBER, {"duration": 600, "timeout": 20, "loop": 2}),
    ),
    "bridge list, ring_type group": (
        lambda: bridge_action(PIOPIY_NUMBER, [AGENT_1, AGENT_2], ring_type="group"),
        lambda a: a.call([AGENT_1, AGENT_2], PIOPIY_NUMBER, {"ring_type": "group"}),
    ),
    "bridge numbers written as strings": (
        lambda: bridge_action("+91 80 3500 0000", ["+91 98765-43210", "(1) 415 555 0123"]),
        lambda a: a.call([AGENT_1, AGENT_2], PIOPIY_NUMBER),
    ),
    "input defaults": (lambda: input_action(DTMF_URL), lambda a: a.input(DTMF_URL, {})),
    "input options": (
        lambda: input_action(DTMF_URL, max_digit=4, timeout=10),
        lambda a: a.input(DTMF_URL, {"max_digit": 4, "timeout": 10}),
    ),
    "play_get_input stored file": (
        lambda: play_get_input_action(DTMF_URL, "menu.wav"),
        lambda a: a.playGetInput(DTMF_URL, "menu.wav", {}),
    ),
    "play_get_input url prompt": (
        lambda: play_get_input_action(DTMF_URL, "https://cdn.example.com/menu.mp3", max_digit=2, max_retry=1),
        lambda a: a.playGetInput(
            DTMF_URL, "https://cdn.example.com/menu.mp3", {"max_digit": 2, "max_retry": 1}
        ),
    ),
}


def canonical(value: Any) -> str:
    """JSON with sorted keys: unlike ==, it tells True from 1 and "8000" from 8000."""
    return json.dumps(value, sort_keys=True)


# StreamAction (the PCMO sent over the socket mid-call) has no input/playGetInput in the SDK.
SDK_BUILDER_PAIRS = [(case, Action) for case in BUILDER_CASES] + [
    (case, StreamAction) for case in BUILDER_CASES if not case.startswith(("input", "play_get_input"))
]


@pytest.mark.parametrize(("case", "sdk_class"), SDK_BUILDER_PAIRS)
def test_builder_matches_the_sdk(case: str, sdk_class: type[Any]) -> None:
    ours, sdk_call = BUILDER_CASES[case]
    sdk = sdk_class()
    sdk_call(sdk)
    pcmo = sdk.PCMO()
    [sdk_action] = json.loads(pcmo) if isinstance(pcmo, str) else pcmo
    assert canonical(ours()) == canonical(sdk_action)


def test_whole_pcmo_matches_the_sdk_stream_pcmo() -> None:
    sdk = StreamAction()
    sdk.speak("Transferring you")
    sdk.call([AGENT_1, AGENT_2], PIOPIY_NUMBER, {"ring_type": "group"})
    ours = encode_pcmo(
        [
            speak_action("Transferring you"),
            bridge_action(PIOPIY_NUMBER, [AGENT_1, AGENT_2], ring_type="group"),
        ]
    )
    assert canonical(json.loads(ours)) == canonical(json.loads(sdk.PCMO()))


@pytest.mark.parametrize(
    ("ours", "sdk_method"),
    [("pause", "pause"), ("break", "interrupt"), ("resume", "resume"), ("stop", "stop")],
)
def test_stream_controls_match_the_sdk(ours: Any, sdk_method: str) -> None:
    assert json.loads(encode_control(ours)) == json.loads(getattr(StreamAction(), sdk_method)())


@pytest.mark.parametrize("audio_type", ["raw", "wav", "mp3", "ogg"])
@pytest.mark.parametrize("rate", [8000, 16000])
def test_stream_audio_matches_the_sdk(audio_type: Any, rate: int) -> None:
    audio = bytes(range(256)) * 3
    sdk = StreamAction().playStream(
        audio_base64=base64.b64encode(audio).decode(), audio_type=audio_type, sample_rate=rate
    )
    assert canonical(json.loads(encode_stream_audio(audio, rate, audio_type))) == canonical(json.loads(sdk))


@pytest.mark.parametrize(
    ("build", "sdk_call"),
    [
        (lambda: stream_action("http://example.com/s"), lambda a: a.stream("http://example.com/s", {})),
        (lambda: stream_action("https://example.com/s"), lambda a: a.stream("https://example.com/s", {})),
        (lambda: input_action("not a url"), lambda a: a.input("not a url", {})),
        (lambda: bridge_action("caller", [AGENT_1]), lambda a: a.call(AGENT_1, "caller")),
    ],
)
def test_both_reject_what_the_sdk_rejects(
    build: Callable[[], dict[str, Any]], sdk_call: Callable[[Any], None]
) -> None:
    with pytest.raises(NameError):
        sdk_call(Action())
    with pytest.raises(PiopiyFormatError):
        build()


@pytest.mark.parametrize(
    ("build", "names"),
    [
        (lambda: stream_action("http://example.com/s"), "ws_url"),
        (lambda: stream_action(WS, listen_mode="everyone"), "listen_mode"),  # type: ignore[arg-type]
        (lambda: stream_action(WS, voice_quality=44100), "voice_quality"),
        (lambda: stream_action(WS, voice_quality="loud"), "voice_quality"),
        (lambda: stream_action(WS, voice_quality=True), "voice_quality"),
        (lambda: play_action(""), "play.file"),
        (lambda: speak_action("  "), "speak.text"),
        (lambda: param_action(""), "param.text"),
        (lambda: bridge_action(PIOPIY_NUMBER, []), "bridge.connect"),
        (lambda: bridge_action(PIOPIY_NUMBER, [""]), "bridge.connect"),
        (lambda: bridge_action(PIOPIY_NUMBER, ["²"]), "bridge.connect"),
        (lambda: bridge_action(PIOPIY_NUMBER, [-5]), "bridge.connect"),
        (lambda: bridge_action("", [AGENT_1]), "bridge.from"),
        (lambda: bridge_action(True, [AGENT_1]), "bridge.from"),
        (lambda: bridge_action(PIOPIY_NUMBER, [AGENT_1], ring_type="x"), "bridge.ring_type"),  # type: ignore[arg-type]
        (lambda: bridge_action(PIOPIY_NUMBER, [AGENT_1], duration=0), "bridge.duration"),
        (lambda: bridge_action(PIOPIY_NUMBER, [AGENT_1], timeout=True), "bridge.timeout"),
        (lambda: input_action(DTMF_URL, max_digit=0), "input.max_digit"),
        (lambda: play_get_input_action("ftp://x/y", "menu.wav"), "play_get_input.action_url"),
        (lambda: play_get_input_action(DTMF_URL, "menu.wav", max_retry=-1), "play_get_input.max_retry"),
        (lambda: encode_pcmo([]), "PCMO"),
        (lambda: encode_pcmo([{"text": "no action key"}]), "PCMO"),
        (lambda: encode_stream_audio(b"\x00", 8000), "even"),
        (lambda: encode_stream_audio(b"\x00\x00", 44100), "sampleRate"),
        (lambda: encode_control("explode"), "explode"),  # type: ignore[arg-type]
    ],
)
def test_builders_reject_bad_input_with_a_format_error(build: Callable[[], Any], names: str) -> None:
    with pytest.raises(PiopiyFormatError, match=names):
        build()


# ------------------------------------------------------------------------------- stream decoder


@settings(max_examples=300, deadline=None)
@given(pcm=st.binary(max_size=4000), cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40))
def test_any_split_of_pcm_reassembles_exactly(pcm: bytes, cuts: list[int]) -> None:
    decoder = StreamDecoder()
    bounds = [0, *sorted(c % (len(pcm) + 1) for c in cuts), len(pcm)]
    out = bytearray()
    for start, end in itertools.pairwise(bounds):
        chunk = decoder.feed_bytes(pcm[start:end])
        assert len(chunk) % 2 == 0  # only whole 16-bit samples ever come out
        assert decoder.pending <= 1
        out += chunk
    usable = len(pcm) - len(pcm) % 2
    assert bytes(out) == pcm[:usable]
    assert decoder.pending == len(pcm) % 2
    assert decoder.bytes_in == len(pcm)


def test_odd_frames_carry_one_byte_into_the_next() -> None:
    decoder = StreamDecoder()
    assert decoder.feed_bytes(b"\x01\x02\x03") == b"\x01\x02"
    assert decoder.pending == 1
    assert decoder.feed_bytes(b"") == b""  # empty frames change nothing
    assert decoder.pending == 1
    assert decoder.feed_bytes(b"\x04") == b"\x03\x04"
    assert decoder.pending == 0
    assert decoder.feed_bytes(b"") == b""


def test_a_5_mb_frame_passes_whole() -> None:
    decoder = StreamDecoder()
    big = bytes(range(256)) * (5 * 1024 * 4)  # 5 MiB
    assert decoder.feed_bytes(b"\xaa") == b""
    out = decoder.feed_bytes(big)
    assert len(out) == len(big)
    assert out[:3] == b"\xaa\x00\x01"
    assert decoder.pending == 1


@pytest.mark.parametrize(
    ("text", "call_uuid"),
    [
        ("9f1c2a4e-6b1d-4c2e-8f3a-0d5e7b9c1a2f", "9f1c2a4e-6b1d-4c2e-8f3a-0d5e7b9c1a2f"),
        (" 9F1C2A4E-6B1D-4C2E-8F3A-0D5E7B9C1A2F\n", "9f1c2a4e-6b1d-4c2e-8f3a-0d5e7b9c1a2f"),
        ('{"cmiuuid": "c-42", "from": 919876543210}', "c-42"),
        ('{"call_uuid": "c-43"}', "c-43"),
        ('{"event": "start", "sample_rate": 8000}', None),
    ],
)
def test_text_frames_with_a_call_id_or_metadata(text: str, call_uuid: str | None) -> None:
    decoder = StreamDecoder()
    frame = decoder.feed_text(text)
    assert isinstance(frame, StreamMetadata)
    assert frame.call_uuid == call_uuid
    assert decoder.text_frames == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "[1, 2]",
        "42",
        "null",
        "NaN",
        "{not json",
        "\ufffd\ufffd",
        "\u202e\u200bcall",
        "🙂" * 500,
        "\ud800",
        "[" * 100_000,
    ],
)
def test_junk_text_frames_are_unknown_text_never_errors(text: str) -> None:
    frame = StreamDecoder().feed_text(text)
    assert isinstance(frame, UnknownText)
    assert len(frame.text) <= 200


@given(st.text(st.characters(exclude_categories=())))  # includes lone surrogates
def test_feed_text_never_raises(text: str) -> None:
    assert isinstance(StreamDecoder().feed_text(text), StreamMetadata | UnknownText)


def test_uuid_call_ids_are_normalised_lowercase() -> None:
    call = uuid.uuid4()
    frame = StreamDecoder().feed_text(str(call).upper())
    assert isinstance(frame, StreamMetadata) and frame.call_uuid == str(call)


# ------------------------------------------------------------------------- outbound round trips


@pytest.mark.parametrize("audio_type", ["raw", "wav", "mp3", "ogg"])
@pytest.mark.parametrize("rate", [8000, 16000])
def test_stream_audio_round_trips(audio_type: Any, rate: int) -> None:
    audio = bytes(range(200))
    frame = decode_outbound(encode_stream_audio(audio, rate, audio_type))
    assert frame == StreamAudio(audio=audio, sample_rate=rate, audio_type=audio_type)


@pytest.mark.parametrize("verb", ["break", "pause", "resume", "stop"])
def test_controls_round_trip(verb: Any) -> None:
    assert decode_outbound(encode_control(verb)) == StreamControl(verb=verb)


def test_pcmo_round_trips() -> None:
    pcmo = [speak_action("One moment"), bridge_action(PIOPIY_NUMBER, [AGENT_1]), hangup_action()]
    assert decode_outbound(encode_pcmo(pcmo)) == PcmoFrame(actions=pcmo)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not json",
        "42",
        "null",
        '"break"',
        "[]",
        "[1]",
        '[{"text": "no action"}]',
        "{}",
        '{"action": "dance"}',
        '{"type": "streamAudio"}',
        '{"type": "streamAudio", "data": {"sampleRate": 8000, "audioDataType": "raw"}}',
        '{"type": "streamAudio", "data": {"audioData": "!!!", "sampleRate": 8000, "audioDataType": "raw"}}',
        '{"type": "streamAudio", "data": {"audioData": "AAAA", "sampleRate": 44100, "audioDataType": "raw"}}',
        '{"type": "streamAudio", "data": {"audioData": "AAAA", "sampleRate": 8000, "audioDataType": "flac"}}',
        '{"type": "streamAudio", "data": {"audioData": 7, "sampleRate": 8000, "audioDataType": "raw"}}',
        "[" * 100_000,
    ],
)
def test_decode_outbound_rejects_garbage_clearly(garbage: str) -> None:
    with pytest.raises(PiopiyFormatError):
        decode_outbound(garbage)
