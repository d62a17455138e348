"""A second process for the message round-trip test: echoes every package message type.

Subscribes to ``echo_in/<Type>`` and republishes each message unchanged on ``echo_out/<Type>``.
Runs until killed. Started by test_messages_dds.py with the test's ROS_DOMAIN_ID.
"""

import rclpy
from dystream_ros.msg import AudioChunk, AvatarState, MotionLatent
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

TYPES = {"AudioChunk": AudioChunk, "MotionLatent": MotionLatent, "AvatarState": AvatarState}


def main() -> None:
    rclpy.init()
    node = Node("dystream_echo")
    pubs = {name: node.create_publisher(t, f"echo_out/{name}", 10) for name, t in TYPES.items()}
    for name, t in TYPES.items():
        node.create_subscription(t, f"echo_in/{name}", pubs[name].publish, 10)
    print("echo ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
