"""Typed model config: profiles, derived audio timing, JSON round trip and validation messages."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dystream_ros.config import (
    AudioConfig,
    AutoencoderConfig,
    ConfigError,
    GeneratorConfig,
    ModelConfig,
    SamplerConfig,
    load_profile,
)


def test_profiles_sizes():
    lite, base = load_profile("lite"), load_profile("base")
    assert lite.profile == "lite" and lite.autoencoder.image_size == 256
    assert base.profile == "base"
    assert (base.generator.width, base.generator.layers, base.latent_dim) == (768, 12, 512)
    assert base.autoencoder.image_size == 512
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        load_profile("nope")


def test_audio_timing_is_derived():
    a = load_profile("lite").audio
    assert a.samples_per_frame == 640 and a.lookahead_ms == 60 and a.lookahead_samples == 960
    # frame n depends on [640n - context, 640(n+1) + lookahead): the window is context + frame + lookahead
    assert a.context_samples + a.samples_per_frame + a.lookahead_samples == a.window_samples
    assert a.lookahead_frames == 4 + 6
    for ms in (0, 200, 400):
        b = dataclasses.replace(a, lookahead_ms=ms)
        assert b.lookahead_samples == 16 * ms
        assert b.context_samples == a.context_samples  # the past context does not depend on L


def test_json_round_trip_and_replace():
    cfg = load_profile("base")
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg
    assert isinstance(again.audio.dilations, tuple)
    lite = load_profile("lite", audio={"lookahead_ms": 120}, generator={"window": 50})
    assert lite.audio.lookahead_ms == 120 and lite.generator.window == 50
    assert json.loads(lite.to_json())["audio"]["lookahead_ms"] == 120


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: AudioConfig(lookahead_ms=65), "lookahead_ms"),
        (lambda: AudioConfig(lookahead_ms=-10), "lookahead_ms"),
        (lambda: AudioConfig(lookahead_ms=1010), "lookahead_ms"),
        (lambda: AudioConfig(fps=30), "fps"),
        (lambda: AudioConfig(n_fft=256), "n_fft"),
        (lambda: AudioConfig(dilations=()), "dilations"),
        (lambda: GeneratorConfig(width=250, heads=4), "heads"),
        (lambda: GeneratorConfig(window=40000), "rope_period"),
        (lambda: GeneratorConfig(layers=0), "layers"),
        (lambda: SamplerConfig(steps=0), "steps"),
        (lambda: SamplerConfig(steps=11), "steps"),
        (lambda: SamplerConfig(guidance_speaker=-1.0), "guidance_speaker"),
        (lambda: SamplerConfig(temperature=-0.1), "temperature"),
        (lambda: SamplerConfig(temperature=float("nan")), "temperature"),
        (lambda: SamplerConfig(head_temperature=2.5), "head_temperature"),
        (lambda: AutoencoderConfig(image_size=300), "warp_size"),
        (lambda: AutoencoderConfig(up_channels=(8, 8)), "up_channels"),
        (lambda: AutoencoderConfig(flow_channels=(8,)), "flow_channels"),
        (lambda: AutoencoderConfig(shading=1), "shading"),
        (lambda: ModelConfig(latent_dim=0), "latent_dim"),
    ],
)
def test_validation_names_the_field(make, field):
    with pytest.raises(ConfigError, match=field):
        make()


def test_lookahead_range_accepted():
    for ms in (0, 60, 200, 300):
        assert AudioConfig(lookahead_ms=ms).lookahead_ms == ms


def test_from_dict_rejects_unknown_and_bad_nested():
    d = load_profile("lite").to_dict()
    d["generator"]["depth"] = 3
    with pytest.raises(ConfigError, match=r"ModelConfig.generator: unknown field\(s\) \['depth'\]"):
        ModelConfig.from_dict(d)
    d = load_profile("lite").to_dict()
    d["audio"] = 5
    with pytest.raises(ConfigError, match="ModelConfig.audio: expected a mapping"):
        ModelConfig.from_dict(d)
    d = load_profile("lite").to_dict()
    d["head"]["blocks"] = "3"
    with pytest.raises(ConfigError, match="HeadConfig.blocks"):
        ModelConfig.from_dict(d)
    with pytest.raises(ConfigError, match="invalid JSON"):
        ModelConfig.from_json("{not json")


def test_sampler_limits_have_one_source():
    """config.SAMPLER_LIMITS is what SamplerConfig, Guidance and the node's parameter descriptors accept."""
    from dystream_ros.config import SAMPLER_LIMITS, ConfigError
    from dystream_ros.model.flow_head import Guidance
    from dystream_ros.runtime.settings import PARAM_BY_NAME

    for name, (lo, hi) in SAMPLER_LIMITS.items():
        p = PARAM_BY_NAME[name]
        assert (p.lo, p.hi) == (lo, hi) and p.default == getattr(SamplerConfig(), name)
        assert p.validate(hi) is None and p.validate(type(p.default)(hi + 1)) is not None
        SamplerConfig(**{name: type(p.default)(hi)})
        with pytest.raises(ConfigError, match=name):
            SamplerConfig(**{name: type(p.default)(hi + 1)})
    hi = SAMPLER_LIMITS["guidance_speaker"][1]
    Guidance(hi, 0.0, 0.0)
    with pytest.raises(ValueError, match="guidance_speaker"):
        Guidance(hi + 1.0, 0.0, 0.0)
