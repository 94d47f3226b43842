"""Each device kind declares itself once, in its package's kind.py, and the rest of the testbed asks it."""

from __future__ import annotations

import pytest

from emulators.kinds import DeviceKind
from emulators.registry import DEVICE_KINDS


@pytest.mark.parametrize("kind", DEVICE_KINDS.values(), ids=list(DEVICE_KINDS))
def test_a_kind_declares_defaults_only_for_its_options(kind: DeviceKind) -> None:
    options = kind.options_schema["properties"]
    assert set(kind.defaults) <= set(options), set(kind.defaults) - set(options)
    for name, value in kind.defaults.items():
        allowed = options[name].get("enum")
        assert allowed is None or value in allowed, (name, value)


@pytest.mark.parametrize("kind", [k for k in DEVICE_KINDS.values() if k.forwards], ids=lambda k: k.name)
def test_a_forwarding_kind_declares_its_latency(kind: DeviceKind) -> None:
    assert kind.latency_ps == kind.defaults["latency"] > 0


@pytest.mark.parametrize("kind", DEVICE_KINDS.values(), ids=list(DEVICE_KINDS))
def test_a_kind_lives_in_its_own_package(kind: DeviceKind) -> None:
    model = kind.load_class()
    assert model.kind == kind.name
    package = model.__module__.rsplit(".", 1)[0]
    assert kind.class_path.startswith(package + ".")
    assert not kind.paths or kind.paths.startswith(package.rsplit(".", 1)[0] + ".")


def test_the_switch_model_takes_its_kinds_defaults() -> None:
    from emulators.ethernet.switch import Switch
    from emulators.gateway.device import Gateway
    from emulators.otn.node import OtnNode

    for model in (Switch, Gateway, OtnNode):
        assert DEVICE_KINDS[model.kind].defaults.items() <= model.option_defaults.items()
