"""``dystream make-bag``: two WAV files (speaker, listener) as a rosbag2 of ``AudioChunk`` messages
(:func:`dystream_ros.io.bags.make_bag`)."""

from __future__ import annotations

import argparse

from dystream_ros.io import bags


def _cmd_make_bag(args: argparse.Namespace) -> int:
    out = bags.make_bag(args.speaker, args.listener, args.out, chunk_ms=args.chunk_ms, storage=args.storage,
                   speaker_topic=args.speaker_topic, listener_topic=args.listener_topic,
                   encoding=args.encoding, overwrite=args.force)
    with bags.BagReader(out) as bag:
        topics = bag.topics
    print(f"wrote {out} ({args.storage}): " + ", ".join(f"{t} [{ty}]" for t, ty in sorted(topics.items())))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "make-bag", help="write two WAV files (speaker, listener) as a rosbag2 of AudioChunk messages",
        description="Write a conversation as a rosbag2 (version 9 metadata) of dystream_ros/AudioChunk "
                    "messages, chunked like a live capture: header.stamp = first sample, bag time = arrival "
                    "of the last sample. The WAVs keep their rate and channels (the node resamples/mixes).")
    p.add_argument("--speaker", required=True, help="the robot's own speech (WAV)")
    p.add_argument("--listener", help="the other party (WAV); omit for a speaker-only bag")
    p.add_argument("--out", required=True, help="output bag directory (must not exist unless --force)")
    p.add_argument("--chunk-ms", type=float, default=20.0, help="message duration in ms (default 20)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--speaker-topic", default=bags.DEFAULT_SPEAKER_TOPIC)
    p.add_argument("--listener-topic", default=bags.DEFAULT_LISTENER_TOPIC)
    p.add_argument("--encoding", choices=("pcm_s16le", "pcm_f32le"),
                   help="sample encoding (default: s16 for 16-bit WAVs, else f32)")
    p.add_argument("--force", action="store_true", help="replace an existing output bag")
    p.epilog = ("The bag has rosbag2 version 9 metadata (Jazzy/Kilted). ROS 2 Humble cannot parse it: "
                "there, play the storage file itself (ros2 bag play -s mcap BAG/BAG.mcap) or run "
                "`ros2 bag reindex BAG` first.")
    p.set_defaults(func=_cmd_make_bag)
