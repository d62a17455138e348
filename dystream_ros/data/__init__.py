"""Training data for the embedded default model: synthetic dyadic conversations and real videos.

Modules:

- :mod:`~dystream_ros.data.face`: procedural 2D face renderer (identities, per-frame articulation).
- :mod:`~dystream_ros.data.speech`: espeak-ng speech with phoneme timing (ctypes), fixed voice split.
- :mod:`~dystream_ros.data.visemes`: phonemes -> visemes -> mouth articulation with coarticulation.
- :mod:`~dystream_ros.data.corpus`: built-in sentences, templates and backchannels.
- :mod:`~dystream_ros.data.conversation`: turn-taking, backchannels, listener/speaker behaviour.
- :mod:`~dystream_ros.data.synth`: the ``dystream synth`` command.
- :mod:`~dystream_ros.data.dataset`: loading synthetic conversations and real videos alike.
- :mod:`~dystream_ros.data.video_folder`: reader for a folder of talking-head videos with audio.
- :mod:`~dystream_ros.data.assets`: the shipped avatars and sample conversation (and how to rebuild them).

Nothing here imports rclpy or torch.
"""
