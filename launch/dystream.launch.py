"""Launch the dystream_node lifecycle node (talking/listening face).

    ros2 launch dystream_ros dystream.launch.py reference:=face.png
    ros2 launch dystream_ros dystream.launch.py checkpoint:=random speaker_topic:=/tts/audio \\
        listener_topic:=/mic/audio namespace:=head

Arguments: namespace (dystream), params_file (the package's config/default.yaml), use_sim_time (false),
log_level (info), autostart (true), speaker_topic (/speaker/audio), listener_topic (/listener/audio),
reference ('' = keep the params file's value), checkpoint ('' = keep the params file's value; 'random'
for random weights).

speaker_info_topic / listener_info_topic ('' = derived from the audio topic the way audio_common names
it: ``/mic/audio_stamped`` -> ``/mic/audio_info``, any other ``<topic>`` -> ``<topic>_info``; only read
with audio_msg_type audio_common_msgs/msg/AudioDataStamped).

Lifecycle: ``autostart`` is handed to the node's own ``autostart`` parameter, so the node configures
and activates itself once at start-up, exactly as under ``ros2 run``, on Humble as on Jazzy/Kilted.
A later manual ``deactivate`` / ``cleanup`` / ``configure`` is left alone (launch event handlers that
react to "reached inactive" fired again on every re-configure and re-activated the node). With
``autostart:=false`` nothing is triggered; drive it with ``ros2 lifecycle set /dystream/dystream_node
configure`` etc. or a lifecycle manager.
"""

import os

from ament_index_python.packages import get_package_share_directory
from dystream_ros.nodes.audio_adapters import info_topic_for
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from launch import LaunchDescription

TRUE = ("true", "1", "yes", "on")


def _node(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {
        "use_sim_time": arg("use_sim_time").strip().lower() in TRUE,
        "autostart": arg("autostart").strip().lower() in TRUE,
    }
    # Empty reference/checkpoint keep whatever the params file says.
    for name in ("reference", "checkpoint"):
        if arg(name):
            overrides[name] = arg(name)
    remappings = []
    for channel in ("speaker", "listener"):
        topic = arg(f"{channel}_topic")
        remappings += [(f"{channel}_audio", topic),
                       (f"{channel}_audio_info", arg(f"{channel}_info_topic") or info_topic_for(topic))]
    return [LifecycleNode(
        package="dystream_ros",
        executable="dystream_node",
        name="dystream_node",
        namespace=arg("namespace"),
        output="screen",
        parameters=[arg("params_file"), overrides],
        remappings=remappings,
        arguments=["--ros-args", "--log-level", arg("log_level")],
        # line-buffered logs through launch's pipe; set on this process only, so nothing leaks into
        # the other processes of a parent launch file
        additional_env={"RCUTILS_LOGGING_BUFFERED_STREAM": "1"},
    )]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("dystream_ros"), "config", "default.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="dystream", description="namespace of the node"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="node parameters YAML"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug|info|warn|error"),
        DeclareLaunchArgument("autostart", default_value="true", description="configure and activate"),
        DeclareLaunchArgument("speaker_topic", default_value="/speaker/audio",
                              description="the robot's own speech (AudioChunk or AudioDataStamped)"),
        DeclareLaunchArgument("listener_topic", default_value="/listener/audio",
                              description="the interlocutor's audio (AudioChunk or AudioDataStamped)"),
        DeclareLaunchArgument("reference", default_value="",
                              description="reference face image ('' = params file / embedded avatar)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="'' = params file / embedded default; 'random'; or a path"),
        DeclareLaunchArgument("speaker_info_topic", default_value="",
                              description="AudioInfo of the speaker audio (audio_common only; '' = derived)"),
        DeclareLaunchArgument("listener_info_topic", default_value="",
                              description="AudioInfo of the listener audio (audio_common only; '' = derived)"),
        OpaqueFunction(function=_node),
    ])
