"""Sound in and out on a robot, ROS-free: PortAudio capture and playback through ``sounddevice``.

* :mod:`.clock`: PortAudio stream time (``inputBufferAdcTime`` / ``outputBufferDacTime``) mapped to a
  system clock (the ROS clock of the node), and the capture stamper that turns ADC times into monotonic
  first-sample stamps with lost samples counted.
* :mod:`.queue`: the playback queue that plays each sample at its scheduled clock time (``stamp +
  playback_delay``), counting late, overflowing, flushed and played samples.
* :mod:`.streams`: supervised input/output streams (open, watch, reopen when the device disappears and
  comes back).
* :mod:`.jack`: a JACK server with the dummy driver (no sound card) for the tests and the docs.

Layer 1: imports only ``config``, ``audio``, ``io`` and ``data`` (and ``sounddevice`` lazily, so the
package imports where PortAudio is absent).
"""
