"""rosbag2 reading and writing without ROS (the ``rosbags`` library); WAVs as a bag (:func:`make_bag`).

* :func:`typestore` — the ROS 2 Kilted types plus this package's messages (parsed from the
  ``msg/*.msg`` files of the source tree or of an installed ``share/dystream_ros``) plus
  ``audio_common_msgs`` (ros-drivers, branch ``ros2``: ``AudioData``, ``AudioDataStamped``,
  ``AudioInfo``), whose definitions are written out below because that package is rarely installed.
* :class:`BagReader` — reads rosbag2 directories in sqlite3 or MCAP storage (or a bare ``.mcap``
  file). Definitions stored in the bag win; types the bag does not describe (Humble's sqlite3 bags
  store none) come from :func:`typestore`.
* :func:`read_audio` — an audio topic as :class:`AudioPacket` s (float32 mono at the message's rate,
  header stamp = first sample, log time = when the recorder received it).
* :class:`BagWriter` — rosbag2 **version 9** metadata, MCAP (default) or sqlite3, message definitions
  and type hashes stored, so ``ros2 bag play`` (Jazzy/Kilted) and Foxglove read the bag. ROS 2 Humble
  cannot parse version 9 ``metadata.yaml``; on Humble play the ``.mcap`` file itself
  (``ros2 bag play DIR/output_0.mcap -s mcap``) or ``ros2 bag reindex`` the directory first.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from dystream_ros.audio import AudioFormatError, decode_pcm
from dystream_ros.audio.messages import AUDIO_CHUNK, AUDIO_COMMON_STAMPED, AUDIO_MSG_TYPES, raw_audio
from dystream_ros.config import NS, SAMPLE_RATE
from dystream_ros.io.wav import read_wav_frames, to_float

MOTION_LATENT = "dystream_ros/msg/MotionLatent"
AVATAR_STATE = "dystream_ros/msg/AvatarState"
IMAGE = "sensor_msgs/msg/Image"
AUDIO_DATA = "audio_common_msgs/msg/AudioData"
AUDIO_INFO = "audio_common_msgs/msg/AudioInfo"

# The avatar node's inputs when it runs in the /dystream namespace (as ``dystream demo`` starts it).
DEFAULT_SPEAKER_TOPIC = "/dystream/speaker_audio"
DEFAULT_LISTENER_TOPIC = "/dystream/listener_audio"
#: make-bag's default start stamp (2023-11-14T22:13:20Z): fixed so the same WAVs give the same bag.
DEFAULT_START_NS = 1_700_000_000 * NS

# ros-drivers/audio_common, branch ros2 (audio_common_msgs/msg/*.msg).
AUDIO_COMMON_MSGS = {
    AUDIO_DATA: "uint8[] data\n",
    AUDIO_COMMON_STAMPED: "std_msgs/Header header\naudio_common_msgs/AudioData audio\n",
    AUDIO_INFO: (
        "uint8 channels\nuint32 sample_rate\nstring sample_format\nuint32 bitrate\nstring coding_format\n"
    ),
}
PACKAGE_MSGS = ("AudioChunk", "MotionLatent", "AvatarState", "FaceArticulation")


class BagError(RuntimeError):
    """A bag that cannot be used as asked (missing topic, unknown type, bad audio format)."""


# ---- types -----------------------------------------------------------------------------------------


def package_share_candidates(rel: str) -> list[Path]:
    """Where a file of the package's share directory (``msg/...``, ``config/...``) may be: next to the
    Python package in a source checkout, ``share/dystream_ros`` of the colcon install tree holding the
    package, and ``share/dystream_ros`` under every ``$AMENT_PREFIX_PATH`` entry."""
    import dystream_ros

    candidates: list[Path] = []
    for entry in dystream_ros.__path__:
        pkg = Path(entry).resolve()
        candidates.append(pkg.parent / rel)
        # install/dystream_ros/lib/python3.X/site-packages/dystream_ros -> install/dystream_ros/share/...
        for up in pkg.parents[:5]:
            candidates.append(up / "share" / "dystream_ros" / rel)
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "dystream_ros" / rel)
    return list(dict.fromkeys(candidates))


def find_msg_dir() -> Path:
    """The directory holding this package's ``*.msg`` files (``$DYSTREAM_MSG_DIR`` first)."""
    candidates = package_share_candidates("msg")
    if os.environ.get("DYSTREAM_MSG_DIR"):
        candidates.insert(0, Path(os.environ["DYSTREAM_MSG_DIR"]))
    for cand in candidates:
        if (cand / "AudioChunk.msg").is_file():
            return cand
    raise BagError(
        "cannot find dystream_ros message definitions (AudioChunk.msg); looked in: "
        + ", ".join(str(c) for c in candidates)
        + ". Set DYSTREAM_MSG_DIR to the package's msg/ directory."
    )


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """ROS 2 Kilted types + dystream_ros messages + audio_common_msgs (ros-drivers)."""
    store = get_typestore(Stores.ROS2_KILTED)
    typs: dict = {}
    msg_dir = find_msg_dir()
    for name in PACKAGE_MSGS:
        typs.update(get_types_from_msg((msg_dir / f"{name}.msg").read_text(), f"dystream_ros/msg/{name}"))
    for name, text in AUDIO_COMMON_MSGS.items():
        typs.update(get_types_from_msg(text, name))
    store.register(typs)
    return store


# ---- reading ---------------------------------------------------------------------------------------


class BagReader:
    """A rosbag2 bag (directory with metadata.yaml, sqlite3 or MCAP; or a single ``.mcap`` file)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as err:  # rosbags raises several error types for unreadable bags
            raise BagError(f"cannot open bag {self.path}: {err}") from err
        self.typestore = self._merged_typestore()

    def _merged_typestore(self) -> Typestore:
        """Definitions stored in the bag first; the default store fills in what the bag lacks."""
        typs: dict = {}
        for conn in self._reader.connections:
            data = conn.msgdef.data if conn.msgdef else ""
            if not data:
                continue
            try:
                if data.startswith("=" * 80 + "\nIDL: ") or conn.msgdef.format.name == "IDL":
                    for part in data.split("=" * 80 + "\n"):
                        if part.startswith("IDL: "):
                            part = part.split("\n", 1)[1]
                        if part.strip():
                            typs.update(get_types_from_idl(part))
                else:
                    typs.update(get_types_from_msg(data, conn.msgtype))
            except Exception:  # an unparsable stored definition: fall back to the default store
                continue
        store = get_typestore(Stores.EMPTY)
        store.register(typs)
        defaults = typestore()
        missing = {k: v for k, v in defaults.fielddefs.items() if k not in store.fielddefs}
        store.register(missing)
        return store

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type."""
        return {c.topic: c.msgtype for c in self._reader.connections}

    @property
    def storage(self) -> str:
        if self.path.is_file():
            return "mcap" if self.path.suffix == ".mcap" else "sqlite3"
        return "mcap" if any(self.path.glob("*.mcap")) else "sqlite3"

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, log time ns, raw CDR) in log-time order."""
        wanted = set(topics) if topics is not None else None
        conns = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        for conn, t_ns, raw in self._reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, t_ns, bytes(raw)

    def deserialize(self, raw: bytes, msgtype: str):
        return self.typestore.deserialize_cdr(raw, msgtype)


@dataclass
class AudioPacket:
    """One audio message, decoded."""

    log_ns: int  # when the recorder received it (bag time)
    stamp_ns: int  # header.stamp: time of the first sample
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int


def pcm_to_mono(data: bytes | np.ndarray, encoding: str, channels: int,
                sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Interleaved little-endian PCM -> float32 mono (channels averaged), decoded by the node's decoder
    (:func:`dystream_ros.audio.decode_pcm`) so that replay hears exactly what the node hears."""
    buf = data if isinstance(data, (bytes, bytearray)) else np.ascontiguousarray(data, dtype=np.uint8)
    try:
        return decode_pcm(buf, encoding, channels, sample_rate).samples
    except AudioFormatError as err:
        raise BagError(str(err)) from err


def decode_audio(msg, msgtype: str, info=None) -> tuple[np.ndarray, int, int]:
    """(samples float32 mono, sample_rate, stamp_ns) of an AudioChunk or AudioDataStamped message, by the
    node's own codec (:func:`dystream_ros.audio.messages.raw_audio`, then :func:`pcm_to_mono`).

    ``info`` is the latest ``audio_common_msgs/AudioInfo`` of that stream; without one audio_common data
    is refused (``BagError``), as the node refuses it.
    """
    if msgtype not in AUDIO_MSG_TYPES:
        raise BagError(f"{msgtype} is not an audio type ({', '.join(AUDIO_MSG_TYPES)})")
    try:
        raw = raw_audio(msg, msgtype, info)
    except AudioFormatError as err:
        raise BagError(str(err)) from err
    return pcm_to_mono(raw.data, raw.encoding, raw.channels, raw.sample_rate), raw.sample_rate, raw.stamp_ns


def audio_topics(topics: dict[str, str]) -> dict[str, str]:
    return {t: ty for t, ty in topics.items() if ty in AUDIO_MSG_TYPES}


def pick_audio_topics(topics: dict[str, str], speaker: str | None = None,
                      listener: str | None = None) -> tuple[str, str | None]:
    """Choose the speaker and listener topics of a bag.

    Explicit names must exist and carry audio. Otherwise the audio topic named like ``speaker``
    (then ``tts``/``robot``) is the speaker and the one named like ``listener`` (then
    ``mic``/``human``/``user``) the listener; a bag with a single audio topic has no listener.
    """
    audio = audio_topics(topics)
    desc = ", ".join(f"{t} [{ty}]" for t, ty in sorted(topics.items())) or "none"
    for name in (speaker, listener):
        if name is not None and name not in audio:
            raise BagError(f"topic {name} is not an audio topic of this bag; topics: {desc}")

    def find(keys: Sequence[str], exclude: str | None) -> str | None:
        for key in keys:
            for t in sorted(audio):
                if key in t.lower() and t != exclude:
                    return t
        return None

    if speaker is None and listener is None and len(audio) == 1:
        return next(iter(audio)), None
    if speaker is None:
        speaker = find(("speaker", "tts", "robot", "self"), listener)
    if listener is None:
        listener = find(("listener", "mic", "human", "user", "other"), speaker)
    rest = [t for t in sorted(audio) if t not in (speaker, listener)]
    if speaker is None and rest:
        speaker = rest.pop(0)
    if speaker is None:
        raise BagError(f"no audio topic found (types {', '.join(AUDIO_MSG_TYPES)}); topics: {desc}")
    return speaker, listener


def info_topics_of(all_topics: dict[str, str], topics: Sequence[str]) -> dict[str, str]:
    """audio topic -> the ``AudioInfo`` topic of its stream in the bag, for ``AudioDataStamped`` topics
    that have one (``<ns>/audio_info`` as audio_capture names it, or ``<topic>_info`` / ``<topic>/info``)."""
    out = {}
    for t in topics:
        if all_topics.get(t) == AUDIO_COMMON_STAMPED:
            ns = t.rsplit("/", 1)[0]
            cands = [f"{ns}/audio_info", f"{t}_info", f"{t}/info"]
            found = next((c for c in cands if all_topics.get(c) == AUDIO_INFO), None)
            if found:
                out[t] = found
    return out


def read_audio(bag: BagReader, topics: Sequence[str]) -> dict[str, list[AudioPacket]]:
    """Every message of the given audio topics, decoded, in log-time order per topic.

    For ``audio_common_msgs/AudioDataStamped`` topics the sibling ``audio_info`` topic (same
    namespace) supplies the format when the bag has it.
    """
    info_topics = info_topics_of(bag.topics, topics)
    wanted = set(topics) | set(info_topics.values())
    infos: dict[str, object] = {}
    out: dict[str, list[AudioPacket]] = {t: [] for t in topics}
    for topic, msgtype, t_ns, raw in bag.messages(wanted):
        msg = bag.deserialize(raw, msgtype)
        if msgtype == AUDIO_INFO:
            infos[topic] = msg
            continue
        info = infos.get(info_topics.get(topic, ""))
        samples, rate, stamp = decode_audio(msg, msgtype, info)
        out[topic].append(AudioPacket(t_ns, stamp, samples, rate))
    return out


# ---- writing ---------------------------------------------------------------------------------------

_ZERO = QosTime(0, 0)


def qos(kind: str = "reliable", depth: int = 10) -> Qos:
    """Offered QoS recorded with a topic: ``reliable``, ``sensor`` (best effort) or ``latched``."""
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=QosReliability.BEST_EFFORT if kind == "sensor" else QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL if kind == "latched" else QosDurability.VOLATILE,
        deadline=_ZERO,
        lifespan=_ZERO,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_ZERO,
        avoid_ros_namespace_conventions=False,
    )


class BagWriter:
    """A rosbag2 (version 9) writer; definitions and hashes stored for every topic.

    ``path`` is a bag directory (``metadata.yaml`` + one storage file), or, when it ends in
    ``.mcap``, a single self-contained MCAP file (schemas, channels with their offered QoS,
    messages): what Foxglove opens and ``ros2 bag play FILE.mcap`` plays (Humble:
    ``ros2 bag play -s mcap FILE.mcap``).
    """

    def __init__(self, path: str | Path, storage: str = "mcap", overwrite: bool = False):
        import shutil

        self.path = Path(path)
        self.single_file = self.path.suffix == ".mcap"
        if self.single_file:
            storage = "mcap"
        if self.path.exists():
            if not overwrite:
                raise BagError(f"{self.path} exists (use overwrite/--force to replace it)")
            if self.path.is_dir():
                shutil.rmtree(self.path)
            else:
                self.path.unlink()
        plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}.get(storage)
        if plugin is None:
            raise BagError(f"unknown storage {storage!r}: use mcap or sqlite3")
        self.storage = storage
        self.typestore = typestore()
        self._dir = self.path
        if self.single_file:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._dir = self.path.parent / f".{self.path.stem}.writing"
            shutil.rmtree(self._dir, ignore_errors=True)
        self._writer = Writer(self._dir, version=9, storage_plugin=plugin)
        self._writer.open()
        self._conns: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str, kind: str = "reliable", depth: int = 10) -> None:
        if topic in self._conns:
            return
        self._conns[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=[qos(kind, depth)])
        self.counts[topic] = 0

    def write(self, topic: str, t_ns: int, msg) -> None:
        """Serialize a rosbags message object and write it at log time ``t_ns``."""
        self.write_raw(topic, t_ns, bytes(self.typestore.serialize_cdr(msg, msg.__msgtype__)))

    def write_raw(self, topic: str, t_ns: int, raw: bytes) -> None:
        self._writer.write(self._conns[topic], int(t_ns), raw)
        self.counts[topic] += 1

    def close(self) -> None:
        self._writer.close()
        if self.single_file:
            import shutil

            (self._dir / f"{self._dir.name}.mcap").replace(self.path)
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _types():
    return typestore().types


def header(stamp_ns: int, frame_id: str = ""):
    t = _types()
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=int(stamp_ns // NS), nanosec=int(stamp_ns % NS)),
        frame_id=frame_id,
    )


def audio_chunk_msg(stamp_ns: int, data: bytes, sample_rate: int, channels: int, encoding: str,
                    frame_id: str = ""):
    return _types()[AUDIO_CHUNK](
        header=header(stamp_ns, frame_id), sample_rate=int(sample_rate), channels=int(channels),
        encoding=encoding, data=np.frombuffer(data, dtype=np.uint8).copy())


def image_msg(stamp_ns: int, image: np.ndarray, frame_id: str = ""):
    img = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = img.shape[:2]
    return _types()[IMAGE](header=header(stamp_ns, frame_id), height=h, width=w, encoding="rgb8",
                           is_bigendian=0, step=w * 3, data=img.reshape(-1))


def latent_msg(stamp_ns: int, index: int, latent: np.ndarray, profile: str, checkpoint: str,
               step_ms: float, processing_ms: float, frame_id: str = ""):
    return _types()[MOTION_LATENT](
        header=header(stamp_ns, frame_id), frame_index=int(index),
        latent=np.asarray(latent, dtype=np.float32).reshape(-1), profile=str(profile),
        checkpoint=str(checkpoint), step_ms=float(step_ms), processing_ms=float(processing_ms))


# ---- make-bag --------------------------------------------------------------------------------------


def _wav_as_pcm(data: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "pcm_s16le":
        if data.dtype == np.int16:
            return data.astype("<i2")
        x = to_float(data)
        return np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    return to_float(data).astype("<f4")


def wav_packets(path: str | Path, chunk_ms: float, start_ns: int, encoding: str | None = None):
    """(log_ns, stamp_ns, AudioChunk fields) for each chunk of a WAV file, as a live capture gives them.

    Stamp = time of the chunk's first sample; log time = arrival of its last sample (stamp + chunk
    duration), which is what a recorder of a real-time source sees.
    """
    data, rate = read_wav_frames(path)
    if encoding is None:
        encoding = "pcm_s16le" if data.dtype == np.int16 else "pcm_f32le"
    pcm = _wav_as_pcm(data, encoding)
    n = max(1, int(round(rate * chunk_ms / 1000.0)))
    for i in range(0, pcm.shape[0], n):
        block = pcm[i : i + n]
        stamp = start_ns + (i * NS) // rate
        end = start_ns + ((i + block.shape[0]) * NS) // rate
        yield end, stamp, (block.tobytes(), rate, pcm.shape[1], encoding)


def make_bag(speaker: str | Path, listener: str | Path | None, out: str | Path, chunk_ms: float = 20.0,
             storage: str = "mcap", speaker_topic: str = DEFAULT_SPEAKER_TOPIC,
             listener_topic: str = DEFAULT_LISTENER_TOPIC, start_ns: int = DEFAULT_START_NS,
             encoding: str | None = None, overwrite: bool = False) -> Path:
    """Write a conversation (two WAV files) as a bag of ``AudioChunk`` messages; returns the bag path."""
    if chunk_ms <= 0:
        raise BagError("chunk_ms must be positive")
    streams = [(speaker_topic, "tts", speaker)]
    if listener is not None:
        streams.append((listener_topic, "mic", listener))
    items = []
    for k, (topic, frame_id, wav) in enumerate(streams):
        for j, (log_ns, stamp, fields) in enumerate(wav_packets(wav, chunk_ms, start_ns, encoding)):
            items.append((log_ns, k, j, topic, frame_id, stamp, fields))
    items.sort(key=lambda x: x[:3])
    with BagWriter(out, storage=storage, overwrite=overwrite) as writer:
        for topic, _, _ in streams:
            writer.add_topic(topic, AUDIO_CHUNK)
        for log_ns, _, _, topic, frame_id, stamp, (data, rate, channels, enc) in items:
            writer.write(topic, log_ns, audio_chunk_msg(stamp, data, rate, channels, enc, frame_id))
    return Path(out)
