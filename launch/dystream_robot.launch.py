"""The robot set-up in one command: microphone + avatar + playback (+ optional TTS).

    ros2 launch dystream_ros dystream_robot.launch.py
    ros2 launch dystream_ros dystream_robot.launch.py tts:=true checkpoint:=random \\
        mic_device:=USB speaker_device:=USB
    ros2 topic pub --once /dystream/say std_msgs/msg/String "{data: 'Hello, I am your robot.'}"
    ros2 topic pub --once /dystream/interrupt std_msgs/msg/Empty    # barge-in: stop speaking

Nodes and topics (namespace ``namespace``, default ``dystream``):

* ``dystream_mic`` publishes the microphone on ``listener_topic`` (``/listener/audio``), the avatar's
  listener channel;
* ``dystream_node`` (dystream.launch.py, the avatar) reads ``speaker_topic`` and ``listener_topic`` and
  publishes ``/<namespace>/face_image``, ``state``, ...; it subscribes ``/<namespace>/interrupt``;
* ``dystream_speaker`` plays ``speaker_topic`` on the loudspeaker, each sample when the avatar's frame of
  it is published (``playback_delay:=auto``; it reads ``/<namespace>/state``) and flushes on
  ``/<namespace>/interrupt``;
* with ``tts:=true``, ``dystream_tts`` speaks the text of ``/<namespace>/say`` (espeak-ng) onto
  ``speaker_topic`` as a burst stamped ahead of time; without it, any TTS node that publishes
  ``dystream_ros/AudioChunk`` on ``speaker_topic`` (stamp = first sample) takes its place.

Arguments: namespace, params_file, checkpoint, reference, log_level, speaker_topic, listener_topic,
mic:=true|false, speaker:=true|false, tts:=false|true, mic_device / speaker_device ('' = the default
device, an index or part of a name), mic_rate (0 = the device's), playback_delay (auto or seconds),
tts_voice. The avatar's own arguments are those of dystream.launch.py.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

TRUE = ("true", "1", "yes", "on")


def _sound_nodes(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    ns = arg("namespace").strip("/")
    prefix = f"/{ns}" if ns else ""
    log = ["--ros-args", "--log-level", arg("log_level")]
    env = {"RCUTILS_LOGGING_BUFFERED_STREAM": "1"}
    nodes = []
    if arg("mic").lower() in TRUE:
        nodes.append(Node(package="dystream_ros", executable="dystream_mic", name="dystream_mic",
                          namespace=ns, output="screen", arguments=log, additional_env=env,
                          parameters=[{"device": arg("mic_device"), "sample_rate": int(arg("mic_rate"))}],
                          remappings=[("audio", arg("listener_topic")),
                                      ("audio_stamped", arg("listener_topic") + "_stamped"),
                                      ("audio_info", arg("listener_topic") + "_info")]))
    if arg("speaker").lower() in TRUE:
        nodes.append(Node(package="dystream_ros", executable="dystream_speaker", name="dystream_speaker",
                          namespace=ns, output="screen", arguments=log, additional_env=env,
                          parameters=[{"device": arg("speaker_device"),
                                       "playback_delay": arg("playback_delay")}],
                          remappings=[("audio", arg("speaker_topic")), ("state", f"{prefix}/state"),
                                      ("interrupt", f"{prefix}/interrupt")]))
    if arg("tts").lower() in TRUE:
        nodes.append(Node(package="dystream_ros", executable="dystream_tts", name="dystream_tts",
                          namespace=ns, output="screen", arguments=log, additional_env=env,
                          parameters=[{"voice": arg("tts_voice")}],
                          remappings=[("audio", arg("speaker_topic")), ("text", f"{prefix}/say"),
                                      ("interrupt", f"{prefix}/interrupt")]))
    return nodes


def generate_launch_description():
    share = get_package_share_directory("dystream_ros")
    avatar = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "dystream.launch.py")),
        launch_arguments={k: LaunchConfiguration(k) for k in (
            "namespace", "params_file", "log_level", "speaker_topic", "listener_topic", "reference",
            "checkpoint")}.items())
    args = [
        ("namespace", "dystream", "namespace of every node"),
        ("params_file", os.path.join(share, "config", "default.yaml"), "avatar parameters YAML"),
        ("log_level", "info", "debug|info|warn|error"),
        ("speaker_topic", "/speaker/audio", "the robot's speech: TTS -> avatar + playback"),
        ("listener_topic", "/listener/audio", "the microphone -> avatar"),
        ("reference", "", "reference face image ('' = params file / embedded avatar)"),
        ("checkpoint", "", "'' = params file / embedded default; 'random'; or a path"),
        ("mic", "true", "start dystream_mic"),
        ("speaker", "true", "start dystream_speaker"),
        ("tts", "false", "start the espeak-ng example dystream_tts (text on /<namespace>/say)"),
        ("mic_device", "", "input device ('' = default, index, or part of its name)"),
        ("mic_rate", "0", "capture rate in Hz (0 = the device's)"),
        ("speaker_device", "", "output device ('' = default, index, or part of its name)"),
        ("playback_delay", "auto", "auto (the avatar's measured frame latency) or seconds"),
        ("tts_voice", "us_m1", "dystream_tts voice (a key of data.speech.VOICES or an espeak-ng name)"),
    ]
    return LaunchDescription([DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in args]
                             + [avatar, OpaqueFunction(function=_sound_nodes)])
