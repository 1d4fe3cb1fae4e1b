"""Lightweight image captioning in LightCap's design ("Efficient Image Captioning for Edge Devices", AAAI 2023,
arXiv 2212.08985; no official code), on CLIP towers built by open_clip (the ``vision`` extra).

* :mod:`~streamlmu.vision.caption.clip`: CLIP's grid features and image embedding in one pass, text embeddings;
* :mod:`~streamlmu.vision.caption.concepts`: the visual concept extractor and the cross-modal modulator;
* :mod:`~streamlmu.vision.caption.fusion`: the fusion model (a TinyBERT-size prefix language model with
  parallel prediction heads);
* :mod:`~streamlmu.vision.caption.decode`: greedy and beam-search decoding;
* :mod:`~streamlmu.vision.caption.distill`: distillation losses from a teacher captioner;
* :mod:`~streamlmu.vision.caption.model`: the parts joined, saved and loaded;
* :mod:`~streamlmu.vision.caption.captioner`: ``Captioner``, the stream operator that re-captions on scene changes;
* :mod:`~streamlmu.vision.caption.vocab`, :mod:`~streamlmu.vision.caption.metrics`: words and caption scores;
* :mod:`~streamlmu.vision.caption.scenes`, :mod:`~streamlmu.vision.caption.data`: the generated caption set
  and the Karpathy-format loader (COCO);
* :mod:`~streamlmu.vision.caption.training`, :mod:`~streamlmu.vision.caption.stages`: CLIP, teacher and
  student training, stage by stage.
"""
