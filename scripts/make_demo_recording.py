"""Write the bundled demo recording: ``python scripts/make_demo_recording.py CORPUS``.

CORPUS is the default synthetic corpus (``streamlmu synth-speech-commands --out CORPUS``);
the recording is 30 s of its test split's words (half of them the ten SCv2 keywords) over
background noise, with the word times in a JSON file beside it.
"""
import json
import sys

import numpy as np
import soundfile

from streamlmu.data.speech_commands import SAMPLE_RATE, WORDS_10, SpeechCommands
from streamlmu.data.streams import StreamBuilder, StreamConfig
from streamlmu.pretrained import DEMO_RECORDING, DEMO_TRUTH

builder = StreamBuilder(SpeechCommands(sys.argv[1], "testing", 35), WORDS_10,
                        StreamConfig(seconds=30.0, long_pause_probability=0.0))
audio, truth = builder.build(seed=0)
soundfile.write(DEMO_RECORDING, (audio * 32767).astype(np.int16), SAMPLE_RATE, subtype="PCM_16")
DEMO_TRUTH.write_text(json.dumps({"keywords": list(WORDS_10), "words": [w._asdict() for w in truth]}, indent=1))
print(f"{DEMO_RECORDING.name}: {len(audio) / SAMPLE_RATE:.1f} s, {len(truth)} words: "
      + " ".join(w.word for w in truth))
