"""Vision operators: frames are images ``(batch, 3, H, W)`` (uint8 RGB or float in [0, 1]).

* :mod:`streamlmu.vision.detect`: a YOLOv8 detector as a stream operator, and its compression
  (sparsity training, channel pruning, channel-wise distillation) in :mod:`~streamlmu.vision.compress`;
* :mod:`streamlmu.vision.track`: IoU + Kalman tracking after a detector (``detector | tracker``);
* :mod:`streamlmu.vision.synth`, :mod:`~streamlmu.vision.visdrone`: detection data;
* :mod:`streamlmu.vision.frames`: frame sources (video files, image folders, webcams, generated video).

The detector needs the ``vision`` extra (``pip install 'streamlmu[vision]'``: ultralytics, which is
AGPL-3.0, and torch-pruning); the rest of streamlmu imports without it.
"""
