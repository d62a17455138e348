"""The node's audio transport over real DDS: what best effort loses is counted, and what a writer of huge
messages costs is bounded.

The installed node runs in its own process (``node_helpers.node_process``).

Loss: with ``input_qos:=sensor_data`` and Fast DDS limited to UDP (``FASTDDS_BUILTIN_TRANSPORTS=UDPv4``;
shared memory would deliver everything on one host) a burst of 1 MB best-effort messages is far more
than a UDP socket buffer holds, so DDS drops some of them (150 MB arrive faster than a Python callback
takes them, at any speed). The node's ``message_lost`` event counts each one; every message sent is then
either received (and counted by the handler) or counted as lost. Over best effort the first and the
last message cannot be known lost (no sequence number before or after reveals the gap), so small
messages go before and after the burst until one arrives. The subscription's queue is deeper than the
burst: a keep-last queue that overflows drops its oldest messages without any DDS event (the node then
counts their audio as a stamp gap, which these undecodable messages do not have).

Memory: six writers, one after the other, each publish one 50 MB message and leave. Under the default
reliable input QoS each message arrives, is rejected by ``max_message_bytes`` and counted; DDS keeps one
reassembly buffer (about one message), not one per writer. A best-effort writer does not match at all.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from dystream_ros.msg import AudioChunk  # noqa: E402
from node_helpers import node_process, rss_mb, to_time, wait_for  # noqa: E402

BURST, TAIL = 150, 40


def _msg(nbytes: int, stamp_ns: int, encoding: str = "pcm_u8") -> AudioChunk:
    """By default in an encoding the node rejects at once: these tests are about transport, not decoding."""
    m = AudioChunk()
    m.header.stamp = to_time(stamp_ns)
    m.sample_rate, m.channels, m.encoding = 48000, 2, encoding
    m.data = bytes(nbytes)
    return m


def _up(p, tester, log):
    assert wait_for(lambda: tester.count("info") >= 1 or p.poll() is not None, 180), log.read_text()
    assert p.poll() is None, log.read_text()[-3000:]


def test_best_effort_losses_are_counted(tmp_path):
    ns = "/lossy"
    node = f"{ns}/dystream_node"
    log = tmp_path / "node.log"
    params = {"checkpoint": "random", "render": "false", "input_qos": "sensor_data",
              "input_qos_depth": 2 * (BURST + TAIL)}
    with node_process(log, ns, params, {"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}, reliable_audio=False) \
            as (p, tester):
        _up(p, tester, log)
        # matched in both directions: best effort has no handshake, and a reader drops data from a writer
        # it has not discovered yet (counted nowhere: that writer does not exist for it)
        assert wait_for(lambda: tester.speaker.get_subscription_count() >= 1
                        and int(tester.last_diag(node).get("speaker_publishers", 0)) >= 1, 60)
        now = tester.get_clock().now().nanoseconds

        def seen():
            d = tester.last_diag(node)
            return int(d.get("speaker_messages_received", 0)) + int(d.get("speaker_messages_lost", 0))

        # a best-effort reader starts counting at the first message it gets (a lost first one leaves no
        # gap before it), so small ones go first until one arrives
        hellos = 0
        while hellos < TAIL:
            tester.send("speaker", _msg(640, now))
            hellos += 1
            if wait_for(lambda: seen() >= 1, 5):
                break
        sent = 1  # counted from the hello that arrived
        for k in range(BURST):
            tester.send("speaker", _msg(1_000_000, now + 1 + k))
        sent += BURST

        # small messages until one gets through: its sequence number reveals every gap before it, so
        # then each message sent is received or counted lost
        for k in range(TAIL):
            tester.send("speaker", _msg(640, now + 1 + BURST + k))
            sent += 1
            if wait_for(lambda n=sent: seen() >= n, 5):
                break
        assert seen() == sent, \
            (sent, ", ".join(f"{k}={v}" for k, v in tester.last_diag(node).items() if "messages" in k))
        d = tester.last_diag(node)
        received, lost = int(d["speaker_messages_received"]), int(d["speaker_messages_lost"])
        assert lost > 0, f"no loss to count ({received} of {sent} received)"
        assert received + lost == sent, (received, lost, sent)
        assert int(d["bad_messages_encoding"]) == received  # each received one was handled
        assert int(d["messages_unaccounted"]) == 0
        assert "lost" in log.read_text() and "in transport" in log.read_text()


def test_huge_messages_from_many_writers_cost_one_buffer(tmp_path):
    from rclpy.duration import Duration
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    ns = "/huge"
    node = f"{ns}/dystream_node"
    log = tmp_path / "node.log"
    with node_process(log, ns, {"checkpoint": "random", "render": "false"}) as (p, tester):
        _up(p, tester, log)
        assert wait_for(lambda: int(tester.last_diag(node).get("speaker_publishers", -1)) == 1, 60)
        start = rss_mb(p.pid)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                              reliability=ReliabilityPolicy.RELIABLE)
        now = tester.get_clock().now().nanoseconds
        for k in range(6):
            pub = tester.create_publisher(AudioChunk, f"{ns}/speaker_audio", reliable)
            assert wait_for(lambda pub=pub: pub.get_subscription_count() >= 1, 30)
            pub.publish(_msg(50_000_000, now + k, "pcm_s16le"))  # 260 s of 48 kHz stereo, 47.7 MiB
            assert pub.wait_for_all_acked(Duration(seconds=60)), "a 50 MB message was not acknowledged"
            tester.destroy_publisher(pub)
            assert wait_for(lambda n=k + 1: int(tester.last_diag(node).get("bad_messages_too_large", 0)) >= n,
                            30), tester.last_diag(node)
        grown = rss_mb(p.pid) - start
        # one 50 MB buffer (plus its deserialised copy while the callback ran), not six
        assert grown < 160, f"node RSS grew by {grown:.0f} MB over six writers of one 50 MB message each"
        # a best-effort writer cannot match the reliable subscription: its data never reaches the node
        be = tester.create_publisher(AudioChunk, f"{ns}/speaker_audio", qos_profile_sensor_data)
        assert wait_for(lambda: int(tester.last_diag(node).get("speaker_incompatible_publishers", 0)) >= 1,
                        30)
        assert be.get_subscription_count() == 0
        tester.destroy_publisher(be)
