"""Caption metrics of pycocoevalcap: BLEU-4, METEOR, ROUGE-L and CIDEr-D (its ``Cider``, with the length
penalty and clipping of CIDEr-D), on captions tokenised by :func:`~streamlmu.vision.caption.vocab.words_of`
(lower case, punctuation dropped) instead of the PTB tokenizer. METEOR runs Java; without it, it is None."""
from __future__ import annotations

import contextlib
import functools
import io
import shutil

from streamlmu.vision.caption.vocab import words_of
from streamlmu.vision.yolo import require


def caption_scores(predictions: list[str], references: list[list[str]], meteor: bool = True) -> dict[str, float | None]:
    """``{"BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"}`` of one predicted caption per image against its references."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need one prediction per image and at least one image (got {len(predictions)} predictions "
                         f"for {len(references)} images)")
    require("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    tokens = (lambda text: " ".join(words_of(text)) or "<empty>")
    res = {i: [tokens(p)] for i, p in enumerate(predictions)}
    gts = {i: [tokens(r) for r in refs] for i, refs in enumerate(references)}
    with contextlib.redirect_stdout(io.StringIO()):   # Bleu prints its counts
        bleu = Bleu(4).compute_score(gts, res)[0][3]
    scores: dict[str, float | None] = {"BLEU-4": float(bleu), "METEOR": None,
                                       "ROUGE-L": float(Rouge().compute_score(gts, res)[0]),
                                       "CIDEr-D": float(Cider().compute_score(gts, res)[0])}
    if meteor and shutil.which("java"):
        scores["METEOR"] = float(_meteor().compute_score(gts, res)[0])
    return scores


@functools.cache
def _meteor():
    """pycocoevalcap's METEOR scorer: a Java process (seconds to start), kept for the next call."""
    from pycocoevalcap.meteor.meteor import Meteor
    return Meteor()
