"""The tester's option defaults: its kind (kind.py) declares them and its model (device.py) runs on them."""

DEFAULTS = {"mtu": 4096}  # bytes per packet of raw flows: RoCE's largest MTU
SMALLEST_FRAME_BYTES = 64  # the smallest Ethernet frame: no packet, and so no frame a device sends, is smaller
