"""Streaming band-limited resampling (Kaiser-windowed sinc, exact rational phase).

:class:`StreamResampler` converts a stream that arrives in arbitrary chunks and gives exactly the same
output as converting the whole signal at once: output sample ``j`` is the band-limited interpolation of
the input at time ``j / out_rate``, so sample indices map to time exactly (input sample 0 and output
sample 0 are the same instant). Because the filter is centred it needs ``half_width`` input samples
after an output position before that output can be produced; those outputs are held back until more
input arrives or :meth:`StreamResampler.flush` pads the stream end with zeros.

Quality: 16 zero crossings per side, Kaiser beta 8.6 (about 80 dB stopband), passband edge at 95 % of
the lower Nyquist frequency, taps normalised to unity DC gain per phase.
"""

from __future__ import annotations

import functools
from math import gcd

import numpy as np

_BANK_MAX_PHASES = 4096  # precompute a polyphase bank when the rational ratio has at most this many phases
_BLOCK = 8192  # outputs computed per vectorised block (bounds temporary memory)


def _kaiser_taps(frac: np.ndarray, half_width: int, cutoff: float, beta: float) -> np.ndarray:
    """Kaiser-windowed sinc taps for fractional positions ``frac``: (len(frac), 2*half_width) float32."""
    offsets = np.arange(-half_width + 1, half_width + 1)
    t = frac[:, None] - offsets[None, :]  # distance from the output position to each input sample
    h = np.sinc(cutoff * t) * np.i0(beta * np.sqrt(np.clip(1.0 - (t / half_width) ** 2, 0.0, 1.0)))
    h /= h.sum(axis=1, keepdims=True)
    return h.astype(np.float32)


@functools.lru_cache(maxsize=16)
def _cached_bank(up: int, half_width: int, cutoff: float, beta: float) -> np.ndarray:
    """The polyphase bank of one rate pair, built once per process (a channel that changes rate, or
    alternates between two, would otherwise rebuild it on every change). Read-only: it is shared."""
    bank = _kaiser_taps(np.arange(up) / up, half_width, cutoff, beta)
    bank.setflags(write=False)
    return bank


class StreamResampler:
    """Resample a mono float32 stream from ``in_rate`` to ``out_rate`` chunk by chunk."""

    def __init__(self, in_rate: int, out_rate: int = 16000, *, zero_crossings: int = 16,
                 rolloff: float = 0.95, beta: float = 8.6):
        in_rate, out_rate = int(in_rate), int(out_rate)
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        g = gcd(in_rate, out_rate)
        self.up = out_rate // g  # output j sits at input position j * down / up
        self.down = in_rate // g
        self.passthrough = in_rate == out_rate
        self.cutoff = min(1.0, out_rate / in_rate) * rolloff  # in cycles per input sample x 2
        self.half_width = int(np.ceil(zero_crossings / self.cutoff))
        self.beta = beta
        self._offsets = np.arange(-self.half_width + 1, self.half_width + 1)  # tap k reads x[i0 + k]
        self._bank = None
        if not self.passthrough and self.up <= _BANK_MAX_PHASES:
            self._bank = _cached_bank(self.up, self.half_width, self.cutoff, self.beta)
        self.reset()

    # ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream: the next input sample is input sample 0 again."""
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # input index of _buf[0]
        self._n_in = 0  # input samples received
        self._next_out = 0  # next output index to produce

    @property
    def samples_in(self) -> int:
        return self._n_in

    @property
    def samples_out(self) -> int:
        return self._next_out

    @property
    def delay_samples_in(self) -> int:
        """Input samples held back (not yet reflected in the output) because the filter is centred."""
        return 0 if self.passthrough else self.half_width

    def expected_output_length(self, n_in: int | None = None) -> int:
        """Output samples a stream of ``n_in`` input samples gives after :meth:`flush`."""
        n = self._n_in if n_in is None else n_in
        return -(-n * self.up // self.down)  # ceil(n * up / down)

    # ------------------------------------------------------------------------------------------
    def _taps(self, frac: np.ndarray) -> np.ndarray:
        """Filter taps for fractional positions ``frac`` in [0, 1): shape (len(frac), 2*half_width)."""
        return _kaiser_taps(frac, self.half_width, self.cutoff, self.beta)

    def _produce(self, j_end: int) -> np.ndarray:
        """Outputs [next_out, j_end); _buf must cover every input sample they read (zeros beyond the end)."""
        out = np.empty(max(0, j_end - self._next_out), dtype=np.float32)
        pos = 0
        for j0 in range(self._next_out, j_end, _BLOCK):
            js = np.arange(j0, min(j_end, j0 + _BLOCK), dtype=np.int64)
            num = js * self.down
            i0 = num // self.up
            phase = num % self.up
            idx = i0[:, None] + self._offsets[None, :] - self._buf_start
            coeff = self._bank[phase] if self._bank is not None else self._taps(phase / self.up)
            vals = np.einsum("ij,ij->i", self._buf[idx], coeff)
            out[pos: pos + len(js)] = vals
            pos += len(js)
        self._next_out = j_end
        return out

    def _trim(self) -> None:
        """Drop input samples no future output can read."""
        first_needed = (self._next_out * self.down) // self.up - self.half_width + 1
        drop = first_needed - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start += drop

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed input samples; return every output sample that can now be computed exactly."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if self.passthrough:
            self._n_in += x.size
            self._next_out += x.size
            return x.copy()
        if self._n_in == 0:
            # Zeros before the stream start: the first outputs read half_width samples of the past.
            self._buf = np.zeros(self.half_width, dtype=np.float32)
            self._buf_start = -self.half_width
        self._buf = np.concatenate([self._buf, x])
        self._n_in += x.size
        # Output j needs input up to i0 + half_width <= n_in - 1.
        last_i0 = self._n_in - 1 - self.half_width
        if last_i0 < 0:
            return np.zeros(0, dtype=np.float32)
        # Output j is ready iff floor(j*down/up) <= last_i0, i.e. j < (last_i0 + 1) * up / down.
        j_end = -(-((last_i0 + 1) * self.up) // self.down)
        out = self._produce(max(j_end, self._next_out))
        self._trim()
        return out

    def flush(self) -> np.ndarray:
        """Pad the stream end with zeros and return the remaining outputs (those before the end time);
        the resampler is then reset for a new stream."""
        if self.passthrough or self._n_in == 0:
            self.reset()
            return np.zeros(0, dtype=np.float32)
        j_end = self.expected_output_length()
        self._buf = np.concatenate([self._buf, np.zeros(2 * self.half_width + 1, dtype=np.float32)])
        out = self._produce(max(j_end, self._next_out))
        self.reset()
        return out


def resample(x: np.ndarray, in_rate: int, out_rate: int = 16000) -> np.ndarray:
    """Resample a whole signal (same filter as :class:`StreamResampler`); len = ceil(len(x)*out/in)."""
    r = StreamResampler(in_rate, out_rate)
    y1 = r.process(x)
    y2 = r.flush()
    return np.concatenate([y1, y2])
