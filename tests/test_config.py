"""Config loading: defaults, a real file, and every kind of bad input naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from subtitled.config import (
    Config,
    load_config,
    plan_languages,
    replace_path,
    with_overrides,
)
from subtitled.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_default_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.toml") == Config()


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", explicit=True)


def test_xdg_config_home_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "subtitled").mkdir()
    (tmp_path / "subtitled" / "config.toml").write_text("[server]\nport = 9000\n")
    assert load_config().server.port == 9000


def test_full_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
[capture]
source = "monitor"
[asr]
model = "tiny.en"
threads = 2
[streaming]
step_s = 0.4
[streaming.vad]
pause_s = 0.8
[server]
port = 9001
allowed_origins = ["http://localhost:3000"]
"""))
    assert config.capture.source == "monitor"
    assert config.asr.threads == 2
    assert config.streaming.step_s == 0.4
    assert config.streaming.vad.pause_s == 0.8
    assert config.server.port == 9001
    assert config.server.allowed_origins == ("http://localhost:3000",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[asr]\nmodle = 'x'\n", r"unknown key 'asr.modle'; allowed in asr: .*model"),
        ("[nope]\n", r"unknown key 'nope'"),
        ("[server]\nport = 'eighty'\n", r"server.port: expected an integer, got str"),
        ("[server]\nport = 70000\n", r"server.port: 70000 is not a port number"),
        ("[streaming]\nstep_s = true\n", r"streaming.step_s: expected a number, got bool"),
        ("[streaming.vad]\npause_s = [1]\n", r"streaming.vad.pause_s: expected a number"),
        ("asr = 3\n", r"asr: expected a table, got int"),
        ("[server\n", r"not valid TOML"),
        ("[translation.policy]\nsentence_words = -1\n",
         r"translation\.policy\.sentence_words: -1 is invalid"),
        ("[translation]\nthreads = -2\n", r"translation\.threads: -2 is invalid; expected .* >= 0"),
        ("[translation.policy]\ncontext_tokens = 10\n",
         r"translation\.policy\.context_tokens: 10 is invalid"),
        ("[translation]\ntargets = ['de', 'de']\n", r"translation\.targets: .* names a language"),
        ("[translation]\ntargets = ['d e']\n", r"translation\.targets: 'd e' is not a language"),
        ("[translation.server]\ntimeout_s = 0\n", r"translation\.server\.timeout_s: 0"),
        ("[translation]\nagreement = 3\n[translation.policy]\nagreement = 2\n",
         r"translation\.agreement and translation\.policy\.agreement are both set"),
        ("[asr]\nlanguage = 'klingon'\n", r"asr.language: 'klingon' is not a Whisper language"),
        ("[asr]\nlanguage = 'de'\n", r"asr.language 'de' needs a multilingual model.*'tiny.en'"),
        ("[asr]\nlanguage = 'auto'\n", r"needs a multilingual model.*asr.model = \"base\""),
        ("[asr]\ntask = 'translate'\n", r"asr.task 'translate' needs a multilingual model"),
        ("[asr]\ntask = 'summarise'\n", r"asr.task: 'summarise' is not allowed"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_replace_path_validates(tmp_path: Path) -> None:
    config = replace_path(Config(), "server.port", 0)
    assert config.server.port == 0
    with pytest.raises(ConfigError, match=r"server\.port: expected an integer"):
        replace_path(Config(), "server.port", "x")
    targets = replace_path(Config(), "translation.targets", "de, es")
    assert targets.translation.targets == ("de", "es")
    assert Config().translation.targets == ("de",)  # German by default
    for off in ("none", "None", ""):
        assert replace_path(Config(), "translation.targets", off).translation.targets == ()
    assert load_config(write(tmp_path, "[translation]\ntargets = []\n")).translation.targets == ()
    split = load_config(write(tmp_path, "[translation.policy]\nsentence_words = 20\n"))
    assert split.translation.policy.sentence_words == 20
    assert Config().translation.policy.sentence_words is None  # the model's own setting


def test_flat_translation_keys_of_older_files_still_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`[translation]` used to be flat: its old keys are read into the nested tables, with a
    warning naming the new key, in files and in `--set`."""
    old = (
        "[translation]\nagreement = 3\ninclude_partial = true\nsentence_words = 9\n"
        "context_tokens = 300\nmax_new_tokens = 99\nserver_url = 'http://127.0.0.1:1234/v1'\n"
        "server_model = 'gemma3:4b'\nserver_timeout_s = 5.0\n"
    )
    translation = load_config(write(tmp_path, old)).translation
    assert (translation.policy.agreement, translation.policy.include_partial) == (3, True)
    assert (translation.policy.sentence_words, translation.policy.context_tokens) == (9, 300)
    assert translation.policy.max_new_tokens == 99
    assert translation.server.url == "http://127.0.0.1:1234/v1"
    assert (translation.server.model, translation.server.timeout_s) == ("gemma3:4b", 5.0)
    assert "translation.server_url is now translation.server.url" in caplog.text
    new = with_overrides(Config(), {}, ["translation.agreement=4", "translation.server.model=m"])
    assert (new.translation.policy.agreement, new.translation.server.model) == (4, "m")


def test_replace_path_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'server\.prot'"):
        replace_path(Config(), "server.prot", 1)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("server.prot", r"unknown key 'server\.prot'; allowed in server: .*\bport\b"),
        ("asr.foo", r"unknown key 'asr\.foo'; allowed in asr: .*\bthreads\b"),
        ("captions.source",
         r"unknown key 'captions\.source'; allowed in the top level: .*\bcapture\b"),
        ("asr.threads.x", r"unknown key 'asr\.threads\.x': asr\.threads is a value"),
    ],
)
def test_set_unknown_key_lists_the_allowed_ones(key: str, expected: str) -> None:
    """`--set` with a typo names the key and what the section allows (as the README says)."""
    with pytest.raises(ConfigError, match=expected):
        with_overrides(Config(), {}, [f"{key}=1"])


@pytest.mark.parametrize(
    ("sets", "task", "model_targets", "whisper_targets"),
    [
        # English speech: every target is the translation model's, as before.
        (["translation.targets=['de']"], "transcribe", ("de",), ()),
        (["translation.targets=['en', 'de']"], "transcribe", ("en", "de"), ()),
        # Other speech, English wanted: Whisper's translate task; the rest read its English.
        (["asr.language='de'", "translation.targets=['en']"], "translate", (), ("en",)),
        (["asr.language='auto'", "translation.targets=['en', 'es']"], "translate", ("es",),
         ("en",)),
        (["asr.language='fr'", "translation.targets=[]"], "transcribe", (), ()),
        (["asr.language='fr'", "translation.targets=['de']"], "transcribe", ("de",), ()),
    ],
)
def test_plan_languages(
    sets: list[str], task: str, model_targets: tuple[str, ...], whisper_targets: tuple[str, ...]
) -> None:
    config = with_overrides(Config(), {"asr.model": "base"}, sets)
    plan = plan_languages(config)
    assert plan.asr.task == task
    assert plan.translation.targets == model_targets
    assert plan.whisper_targets == whisper_targets
