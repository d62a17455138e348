"""rosbag2 I/O without ROS: make-bag (sqlite3 and MCAP), audio decoding, audio_common_msgs, the writer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import wavfile

from dystream_ros.io import bags
from dystream_ros.io.images import image_msg_to_rgb


def _wavs(tmp_path, seconds=(1.0, 0.8)):
    sr_s, sr_l = 16000, 44100
    t = np.arange(int(sr_s * seconds[0])) / sr_s
    spk = (np.sin(2 * np.pi * 220 * t) * 9000).astype(np.int16)
    tl = np.arange(int(sr_l * seconds[1])) / sr_l
    tone = np.sin(2 * np.pi * 330 * tl)
    lis = (np.stack([tone, tone], 1) * 0.25).astype(np.float32)
    wavfile.write(tmp_path / "s.wav", sr_s, spk)
    wavfile.write(tmp_path / "l.wav", sr_l, lis)
    return tmp_path / "s.wav", tmp_path / "l.wav", spk, lis


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_make_bag_round_trip(tmp_path, storage):
    s, li, spk, lis = _wavs(tmp_path)
    out = bags.make_bag(s, li, tmp_path / "bag", chunk_ms=20, storage=storage)
    assert (out / "metadata.yaml").is_file()
    assert "version: 9" in (out / "metadata.yaml").read_text()
    with bags.BagReader(out) as bag:
        assert bag.storage == storage
        assert bag.topics == {bags.DEFAULT_SPEAKER_TOPIC: bags.AUDIO_CHUNK,
                              bags.DEFAULT_LISTENER_TOPIC: bags.AUDIO_CHUNK}
        expected = (bags.DEFAULT_SPEAKER_TOPIC, bags.DEFAULT_LISTENER_TOPIC)
        assert bags.pick_audio_topics(bag.topics) == expected
        audio = bags.read_audio(bag, list(bag.topics))
        logs = [t for _, _, t, _ in bag.messages()]
    assert logs == sorted(logs)
    sp = audio[bags.DEFAULT_SPEAKER_TOPIC]
    assert len(sp) == 50 and all(p.sample_rate == 16000 for p in sp)
    np.testing.assert_array_equal(np.concatenate([p.samples for p in sp]), spk.astype(np.float32) / 32768.0)
    # stamp = first sample, bag time = arrival of the last sample
    assert sp[0].stamp_ns == bags.DEFAULT_START_NS
    assert sp[1].stamp_ns - sp[0].stamp_ns == 20_000_000
    assert all(p.log_ns - p.stamp_ns == 20_000_000 for p in sp)
    li_p = audio[bags.DEFAULT_LISTENER_TOPIC]
    assert li_p[0].sample_rate == 44100
    got = np.concatenate([p.samples for p in li_p])
    np.testing.assert_allclose(got, lis.mean(axis=1), atol=1e-6)  # stereo mixed down


def test_make_bag_cli_and_existing_output(tmp_path):
    from dystream_ros.cli import main

    s, li, _, _ = _wavs(tmp_path)
    assert main(["make-bag", "--speaker", str(s), "--listener", str(li), "--out", str(tmp_path / "b"),
                 "--storage", "sqlite3", "--chunk-ms", "32"]) == 0
    with bags.BagReader(tmp_path / "b") as bag:
        first = bags.read_audio(bag, [bags.DEFAULT_SPEAKER_TOPIC])[bags.DEFAULT_SPEAKER_TOPIC][0]
    assert first.samples.size == 512
    with pytest.raises(bags.BagError, match="exists"):
        bags.make_bag(s, li, tmp_path / "b")


def _audio_common_bag(path, pcm: np.ndarray, rate: int, channels: int, chunk: int, start_ns: int):
    """A bag as ros-drivers audio_capture (format:=wave) records it: AudioDataStamped + latched AudioInfo."""
    t = bags.typestore().types
    with bags.BagWriter(path, storage="sqlite3") as w:
        w.add_topic("/mic/audio_info", bags.AUDIO_INFO, kind="latched")
        w.add_topic("/mic/audio_stamped", bags.AUDIO_COMMON_STAMPED, kind="sensor")
        w.write("/mic/audio_info", start_ns, t[bags.AUDIO_INFO](
            channels=channels, sample_rate=rate, sample_format="S16LE", bitrate=0, coding_format="wave"))
        frames = pcm.reshape(-1, channels)
        for i in range(0, len(frames), chunk):
            block = frames[i : i + chunk].astype("<i2").tobytes()
            stamp = start_ns + i * 10**9 // rate
            msg = t[bags.AUDIO_COMMON_STAMPED](
                header=bags.header(stamp, "mic"),
                audio=t[bags.AUDIO_DATA](data=np.frombuffer(block, np.uint8).copy()))
            w.write("/mic/audio_stamped", stamp + len(frames[i : i + chunk]) * 10**9 // rate, msg)


def test_audio_common_msgs_with_audio_info(tmp_path):
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal((4800, 2)) * 3000).astype(np.int16)
    _audio_common_bag(tmp_path / "ac", pcm, 48000, 2, 1024, bags.DEFAULT_START_NS)
    with bags.BagReader(tmp_path / "ac") as bag:
        sp, li = bags.pick_audio_topics(bag.topics)
        assert sp == "/mic/audio_stamped" and li is None
        packets = bags.read_audio(bag, [sp])[sp]
    assert packets[0].sample_rate == 48000
    got = np.concatenate([p.samples for p in packets])
    np.testing.assert_allclose(got, pcm.astype(np.float32).mean(axis=1) / 32768.0, atol=1e-6)


def test_topic_selection_errors(tmp_path):
    s, li, _, _ = _wavs(tmp_path)
    bag = bags.make_bag(s, None, tmp_path / "solo")
    with bags.BagReader(bag) as r:
        assert bags.pick_audio_topics(r.topics) == (bags.DEFAULT_SPEAKER_TOPIC, None)
        with pytest.raises(bags.BagError, match="not an audio topic"):
            bags.pick_audio_topics(r.topics, speaker="/nope")


def test_compressed_audio_is_refused():
    t = bags.typestore().types
    info = t[bags.AUDIO_INFO](channels=1, sample_rate=16000, sample_format="S16LE", bitrate=192,
                               coding_format="mp3")
    msg = t[bags.AUDIO_COMMON_STAMPED](header=bags.header(0), audio=t[bags.AUDIO_DATA](
        data=np.zeros(64, np.uint8)))
    with pytest.raises(bags.BagError, match="mp3"):
        bags.decode_audio(msg, bags.AUDIO_COMMON_STAMPED, info)


def test_single_file_mcap_writer_stores_definitions(tmp_path):
    out = tmp_path / "x" / "output.mcap"
    img = np.zeros((4, 6, 3), np.uint8)
    img[1, 2] = (10, 20, 30)
    with bags.BagWriter(out) as w:
        w.add_topic("/face", bags.IMAGE)
        w.add_topic("/lat", bags.MOTION_LATENT)
        w.write("/face", 5, bags.image_msg(5, img))
        w.write("/lat", 5, bags.latent_msg(5, 0, np.arange(3, dtype=np.float32), "lite", "random", 1.0, 2.0))
    assert out.is_file() and not any(p.name.startswith(".") for p in out.parent.iterdir())
    with bags.BagReader(out) as bag:
        msgs = {t: bag.deserialize(raw, ty) for t, ty, _, raw in bag.messages()}
        # definitions travel in the file: a reader needs no local types to decode them
        assert all(c.msgdef.data for c in bag._reader.connections)
    np.testing.assert_array_equal(image_msg_to_rgb(msgs["/face"]), img)
    assert list(msgs["/lat"].latent) == [0.0, 1.0, 2.0] and msgs["/lat"].profile == "lite"
