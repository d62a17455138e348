"""Launch the dystream_node lifecycle node (talking/listening face).

    ros2 launch dystream_ros dystream.launch.py reference:=face.png
    ros2 launch dystream_ros dystream.launch.py checkpoint:=random speaker_topic:=/tts/audio \\
        listener_topic:=/mic/audio namespace:=head

Arguments: namespace (dystream), params_file (the package's config/default.yaml), use_sim_time (false),
log_level (info), autostart (true), speaker_topic (/speaker/audio), listener_topic (/listener/audio),
reference ('' = keep the params file's value), checkpoint ('' = keep the params file's value; 'random'
for random weights).

Lifecycle: the node's own ``autostart`` parameter is set to false and this file drives the transitions
with launch_ros event handlers (emit CONFIGURE when the process starts, ACTIVATE when the node reaches
``inactive``). That works with launch_ros on Humble as on Jazzy/Kilted (whose ``LifecycleNode(autostart=)``
is not used, for Humble compatibility). With ``autostart:=false`` nothing is triggered; drive it with
``ros2 lifecycle set /dystream/dystream_node configure`` etc.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription

TRUE = ("true", "1", "yes", "on")


def _node_and_transitions(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {
        "use_sim_time": arg("use_sim_time").strip().lower() in TRUE,
        "autostart": False,  # the event handlers below drive the transitions
    }
    # Empty reference/checkpoint keep whatever the params file says.
    for name in ("reference", "checkpoint"):
        if arg(name):
            overrides[name] = arg(name)

    node = LifecycleNode(
        package="dystream_ros",
        executable="dystream_node",
        name="dystream_node",
        namespace=arg("namespace"),
        output="screen",
        parameters=[arg("params_file"), overrides],
        remappings=[("speaker_audio", arg("speaker_topic")), ("listener_audio", arg("listener_topic")),
                    ("speaker_audio_info", arg("speaker_topic") + "_info"),
                    ("listener_audio_info", arg("listener_topic") + "_info")],
        arguments=["--ros-args", "--log-level", arg("log_level")],
    )
    actions = [node]
    if arg("autostart").strip().lower() in TRUE:
        actions += [
            RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
                entities=[EmitEvent(event=ChangeState(
                    lifecycle_node_matcher=matches_action(node),
                    transition_id=Transition.TRANSITION_ACTIVATE))])),
            # launch_ros waits for the node's change_state service before sending this.
            EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                        transition_id=Transition.TRANSITION_CONFIGURE)),
        ]
    return actions


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
                              description="the robot's own speech (AudioChunk)"),
        DeclareLaunchArgument("listener_topic", default_value="/listener/audio",
                              description="the interlocutor's audio (AudioChunk)"),
        DeclareLaunchArgument("reference", default_value="",
                              description="reference face image ('' = params file / embedded avatar)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="'' = params file / embedded default; 'random'; or a path"),
        SetEnvironmentVariable("RCUTILS_LOGGING_BUFFERED_STREAM", "1"),
        OpaqueFunction(function=_node_and_transitions),
    ])
