"""Device discovery (softphone.media.devices) through real PortAudio on virtual devices,
plus the lookup rules on a scripted PyAudio stand-in."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from softphone.media.device import AudioDeviceError
from softphone.media.devices import (
    AUDIO_BACKEND_UNAVAILABLE,
    DEVICE_AMBIGUOUS,
    DEVICE_NOT_FOUND,
    DEVICE_SCAN_FAILED,
    NO_MICROPHONE,
    NO_OUTPUT_DEVICE,
    AudioSystem,
    DeviceInfo,
    load_pyaudio,
    quiet_stderr,
    server_converts_rate,
    sound_server_running,
)

from .audio_env import (
    INPUTS,
    OUTPUTS,
    PORTAUDIO_PULSE_RATE,
    FakeDevice,
    FakePyAudio,
    VirtualAudio,
    provide_virtual_audio,
)


@pytest.fixture(scope="session")
def virtual_audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualAudio]:
    """tests/audio_env.py's devices (one shared daemon for the whole session)."""
    yield from provide_virtual_audio(tmp_path_factory)


@pytest.fixture
def system(virtual_audio: VirtualAudio) -> Iterator[AudioSystem]:
    with AudioSystem() as audio_system:
        yield audio_system


# -- real PortAudio on the virtual devices ---------------------------------------------------


def test_lists_the_virtual_devices(system: AudioSystem) -> None:
    devices = {d.name: d for d in system.devices()}
    for name in (*INPUTS, VirtualAudio.DEAD_MIC):
        assert devices[name].is_input, devices[name]
        assert devices[name].max_input_channels >= 1
    for name in (*OUTPUTS, VirtualAudio.DEAD_SPEAKER):
        assert devices[name].is_output, devices[name]
    for name in (*INPUTS, *OUTPUTS):
        d = devices[name]
        assert d.host_api == "ALSA"
        # PortAudio probes 44100 Hz first on PCMs that accept any rate (the pulse plugin).
        assert d.default_sample_rate == PORTAUDIO_PULSE_RATE
        assert d.max_input_channels == d.max_output_channels == 32  # PulseAudio's maximum
        assert not d.is_default_input
        assert not d.is_default_output
    default = devices["default"]
    assert default.is_default_input
    assert default.is_default_output
    assert [d.index for d in system.devices()] == list(range(len(devices)))
    assert system.find_input() == default
    assert system.find_output() == default


def test_find_by_index_and_by_name(system: AudioSystem) -> None:
    mic2 = next(d for d in system.devices() if d.name == VirtualAudio.MIC2)
    assert system.find_input(mic2.index) == mic2
    assert system.find_input("paced_in2") == mic2  # exact name
    assert system.find_input("PACED_IN2") == mic2  # case-insensitive
    assert system.find_input("in2") == mic2  # unique part of the name
    assert system.find_output("ced_out8").name == VirtualAudio.SPEAKER_8K
    assert system.find_output("paced_out").name == "paced_out"  # exact wins over substring


def test_ambiguous_and_unknown_names(system: AudioSystem) -> None:
    assert system.find_input("paced_in").name == "paced_in"  # exact name: not ambiguous
    with pytest.raises(AudioDeviceError) as err:
        system.find_input("paced")
    assert err.value.code == DEVICE_AMBIGUOUS
    assert "paced_in2" in err.value.message
    assert "full name or the number" in err.value.message

    with pytest.raises(AudioDeviceError) as err:
        system.find_output("no such speaker")
    assert err.value.code == DEVICE_NOT_FOUND
    assert "'no such speaker'" in err.value.message
    assert "paced_out" in err.value.message

    with pytest.raises(AudioDeviceError) as err:
        system.find_input(999)
    assert err.value.code == DEVICE_NOT_FOUND
    assert "999" in err.value.message


def test_rescan_sees_a_plugged_and_unplugged_device(
    system: AudioSystem, virtual_audio: VirtualAudio
) -> None:
    before = system.devices()
    first = system.rescan(active=[VirtualAudio.MIC, VirtualAudio.SPEAKER])
    assert not first.changed
    assert not first.lost_active
    assert [d.key for d in first.devices] == [d.key for d in before]

    with virtual_audio.extra_input("hotplug_mic"):
        plugged = system.rescan(active=[VirtualAudio.MIC])
    assert [d.name for d in plugged.added] == ["hotplug_mic"]
    assert plugged.removed == ()
    assert not plugged.lost_active
    assert not plugged.default_input_changed
    assert not plugged.default_output_changed
    # This process's PortAudio still has its own list (re-enumerating would stop streams).
    assert "hotplug_mic" not in {d.name for d in system.devices()}

    unplugged = system.rescan(active=["hotplug_mic", VirtualAudio.SPEAKER])
    assert [d.name for d in unplugged.removed] == ["hotplug_mic"]
    assert unplugged.lost_active
    assert unplugged.seconds < 5, unplugged.seconds
    print(f"rescan took {first.seconds * 1000:.0f} / {unplugged.seconds * 1000:.0f} ms")


def test_reload_refused_while_streams_are_open(system: AudioSystem) -> None:
    count = len(system.devices())
    system.stream_opened()
    with pytest.raises(RuntimeError, match="end the call first"):
        system.reload()
    system.stream_closed()
    assert len(system.reload()) == count


def test_portaudio_chatter_never_reaches_stderr(
    virtual_audio: VirtualAudio, capfd: pytest.CaptureFixture[str]
) -> None:
    pyaudio = load_pyaudio()
    capfd.readouterr()
    raw = pyaudio.PyAudio()  # control: without the redirect PortAudio/JACK talk on fd 2
    raw.terminate()
    control = capfd.readouterr().err

    with AudioSystem() as system:
        names = [d.name for d in system.devices()]
        system.find_input(VirtualAudio.MIC)
        assert system.rescan().devices
    captured = capfd.readouterr()
    assert captured.err == "", f"stderr was not clean (control printed {control!r})"
    assert VirtualAudio.MIC in names


def test_quiet_stderr_restores_fd2_after_an_exception(capfd: pytest.CaptureFixture[str]) -> None:
    def noisy() -> None:
        with quiet_stderr():
            os.write(2, b"hidden\n")
            with quiet_stderr():  # nested / concurrent use is reference-counted
                os.write(2, b"hidden too\n")
            os.write(2, b"still hidden\n")
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        noisy()
    os.write(2, b"visible\n")
    assert capfd.readouterr().err == "visible\n"


# -- lookup rules on a scripted PyAudio --------------------------------------------------------


def fake_system(devices: list[FakeDevice], **kwargs: Any) -> AudioSystem:
    return AudioSystem(backend=FakePyAudio(devices, **kwargs))


def test_no_microphone_and_no_output() -> None:
    speakers_only = fake_system([FakeDevice("Speakers", outputs=2)], default_output=0)
    with pytest.raises(AudioDeviceError) as err:
        speakers_only.find_input()
    assert err.value.code == NO_MICROPHONE
    assert "connect one" in err.value.message
    with pytest.raises(AudioDeviceError) as err:
        speakers_only.find_input("mic")  # asking by name when there are none: same answer
    assert err.value.code == NO_MICROPHONE

    mic_only = fake_system([FakeDevice("Mic", inputs=1)], default_input=0)
    with pytest.raises(AudioDeviceError) as err:
        mic_only.find_output()
    assert err.value.code == NO_OUTPUT_DEVICE


def test_no_default_device_asks_to_pick_one() -> None:
    system = fake_system([FakeDevice("USB Mic", inputs=1), FakeDevice("Speakers", outputs=2)])
    with pytest.raises(AudioDeviceError) as err:
        system.find_input()
    assert err.value.code == NO_MICROPHONE
    assert "--input" in err.value.message
    assert "USB Mic" in err.value.message
    with pytest.raises(AudioDeviceError) as err:
        system.find_output()
    assert err.value.code == NO_OUTPUT_DEVICE


def test_name_rules() -> None:
    system = fake_system(
        [
            FakeDevice("Mic", inputs=1),
            FakeDevice("Mic 2", inputs=1),
            FakeDevice("Headset", inputs=1, outputs=2, host_api=0),
            FakeDevice("Headset", inputs=1, outputs=2, host_api=1),
            FakeDevice("Speakers", outputs=2),
        ],
        host_apis=("MME", "WASAPI"),
        default_host_api=1,
        default_input=0,
        default_output=4,
    )
    assert system.find_input("Mic").index == 0  # exact name beats "Mic 2"
    assert system.find_input("mic").index == 0  # case-insensitive exact beats substrings
    assert system.find_input("2").index == 1
    assert system.find_output("Headset").index == 3  # same name twice: default host API
    assert system.find_input("headset").host_api == "WASAPI"
    with pytest.raises(AudioDeviceError) as err:
        system.find_input("i")  # "Mic" and "Mic 2"
    assert err.value.code == DEVICE_AMBIGUOUS
    with pytest.raises(AudioDeviceError) as err:
        system.find_input(4)  # exists, but output only
    assert err.value.code == DEVICE_NOT_FOUND
    assert "no input channels" in err.value.message
    with pytest.raises(TypeError):
        system.find_input(1.5)  # type: ignore[arg-type]


def test_device_info_json_round_trip() -> None:
    info = DeviceInfo(3, "USB Headset", "ALSA", 1, 2, 48000.0, is_default_output=True)
    assert DeviceInfo.from_json(info.to_json()) == info
    assert info.is_input
    assert info.is_output
    assert "USB Headset" in info.describe()
    assert "default output" in info.describe()


def test_backend_that_will_not_load(monkeypatch: pytest.MonkeyPatch) -> None:
    load_pyaudio.cache_clear()
    monkeypatch.setitem(sys.modules, "pyaudio", None)  # makes `import pyaudio` fail
    try:
        with pytest.raises(AudioDeviceError) as err:
            AudioSystem().devices()
        assert err.value.code == AUDIO_BACKEND_UNAVAILABLE
        assert "portaudio" in err.value.message.lower()
    finally:
        load_pyaudio.cache_clear()


def test_backend_that_will_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenModule:
        @staticmethod
        def PyAudio() -> object:
            raise OSError(-9999, "Unanticipated host error")

    monkeypatch.setattr("softphone.media.devices.load_pyaudio", lambda: BrokenModule)
    with pytest.raises(AudioDeviceError) as err:
        AudioSystem().devices()
    assert err.value.code == AUDIO_BACKEND_UNAVAILABLE
    assert "Unanticipated host error" in err.value.message


def test_scan_failures_are_coded() -> None:
    failing = AudioSystem(
        backend=FakePyAudio([]), rescan_command=[sys.executable, "-c", "raise SystemExit(3)"]
    )
    with pytest.raises(AudioDeviceError) as err:
        failing.rescan()
    assert err.value.code == DEVICE_SCAN_FAILED
    assert "exit status 3" in err.value.message

    hung = AudioSystem(
        backend=FakePyAudio([]),
        rescan_command=[sys.executable, "-c", "import time; time.sleep(30)"],
        rescan_timeout=0.3,
    )
    with pytest.raises(AudioDeviceError) as err:
        hung.rescan()
    assert err.value.code == DEVICE_SCAN_FAILED
    assert "did not finish" in err.value.message


# -- who converts the sample rate ------------------------------------------------------------


def alsa(name: str, host_api: str = "ALSA") -> DeviceInfo:
    return DeviceInfo(0, name, host_api, 2, 2, 44100.0)


def test_sound_server_detection(tmp_path: Path) -> None:
    assert not sound_server_running({})
    assert sound_server_running({"PULSE_SERVER": "unix:/run/somewhere"})
    runtime = tmp_path / "run"
    (runtime / "pulse").mkdir(parents=True)
    assert not sound_server_running({"XDG_RUNTIME_DIR": str(runtime)})
    (runtime / "pulse" / "native").touch()
    assert sound_server_running({"XDG_RUNTIME_DIR": str(runtime)})
    pipewire = tmp_path / "pw"
    pipewire.mkdir()
    (pipewire / "pipewire-0").touch()
    assert sound_server_running({"XDG_RUNTIME_DIR": str(pipewire)})


def test_which_devices_have_their_rate_converted_by_a_sound_server() -> None:
    server = {"PULSE_SERVER": "unix:/run/pulse/native"}
    for name in ("pulse", "pipewire"):
        assert server_converts_rate(alsa(name), {})
        assert server_converts_rate(alsa(name), server)
    # "default" is the server's only while one runs (distributions route it there).
    assert server_converts_rate(alsa("default"), server)
    assert not server_converts_rate(alsa("default"), {})
    # Hardware and ALSA's own plug devices convert in alsa-lib (linear interpolation).
    for name in ("HDA Intel PCH: ALC892 Analog (hw:0,0)", "sysdefault", "dmix", "front"):
        assert not server_converts_rate(alsa(name), server)
    # Other host APIs keep the device's own rate.
    assert not server_converts_rate(alsa("pulse", "JACK Audio Connection Kit"), server)
    assert not server_converts_rate(alsa("default", "Windows WASAPI"), server)
