"""Mouth readers: mouth opening and head pitch read from face images, independent of the generator.

Two readers share one interface, ``MouthReader.load(kind).read(frames) -> dict``:

- ``"synthetic"`` (:class:`SyntheticMouthReader`): a small CNN that reads ``jaw_open``, ``lip_close``,
  ``head_pitch`` and the visible mouth opening ``mouth = jaw_open * (1 - lip_close)`` from a face image
  of the procedural renderer (``dystream_ros.data.face``). It is trained **only on ground-truth renders**
  (training identities :data:`~dystream_ros.data.face.TRAIN_IDENTITIES`, random articulations over the
  full parameter ranges, random head pose, blinks, gaze, plus shift/scale/blur/noise/JPEG/colour jitter
  so that it also reads the generator's imperfect renders), never on generator output. Weights ship in
  ``dystream_ros/assets/evaluator/mouth_reader.safetensors``; the config (architecture, crop, outputs,
  training command and held-out accuracy) is JSON in the safetensors metadata. Reproduce with::

      python -m dystream_ros.eval.mouth_reader train \
          --out dystream_ros/assets/evaluator/mouth_reader.safetensors --seed 0

  and measure it on held-out identities with ``python -m dystream_ros.eval.mouth_reader eval``.

- ``"mediapipe"`` (:class:`MediaPipeMouthReader`): MediaPipe FaceMesh (``mediapipe==0.10.14``, whose wheel
  bundles the face-mesh model) for photographic faces. ``mouth`` = inner-lip gap (landmarks 13-14) over
  face height (10-152); ``pitch`` = a head-pitch proxy in radians from the 3-D forehead-chin axis
  (positive = chin up, like the renderer's ``head_pitch``). Frames without a detected face give NaN.
  FaceMesh does not find a face in the cartoon-like synthetic renders (see ``test/test_mouth_reader.py``),
  so use ``"synthetic"`` for those.

``read`` returns float32 arrays of length T: ``mouth``, ``pitch`` (always), ``jaw_open`` and
``lip_close`` (synthetic reader only; ``None`` for MediaPipe) and ``valid`` (bool, face found).

Modules: :mod:`.readers` (the two readers), :mod:`.network` (the CNN, its config and preprocessing),
:mod:`.training` (training data, training, held-out metrics, the command line).
"""

from .network import DEFAULT_WEIGHTS, MouthReaderError, ReaderConfig
from .readers import MediaPipeMouthReader, MouthReader, SyntheticMouthReader
from .training import heldout_metrics, train

__all__ = [
    "DEFAULT_WEIGHTS",
    "MediaPipeMouthReader",
    "MouthReader",
    "MouthReaderError",
    "ReaderConfig",
    "SyntheticMouthReader",
    "heldout_metrics",
    "train",
]
