"""Settings from the environment: the secret key is shared by every process of one home, and a key file that
cannot be read is an error naming the setting, not a silent per-process key."""
from __future__ import annotations

from pathlib import Path

import pytest

from workers.engine.errors import InvalidInput
from workers.settings import load_settings


def test_processes_of_one_home_share_the_generated_secret_key(tmp_path: Path) -> None:
    first = load_settings(env={"QUIRKSCOPE_HOME": str(tmp_path)})
    second = load_settings(env={"QUIRKSCOPE_HOME": str(tmp_path)})
    assert len(first.secret_key) == 64
    assert first.secret_key == second.secret_key == (tmp_path / "secret_key").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".secret_key.")]


def test_unreadable_secret_key_file_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "secret_key").mkdir()  # exists, cannot be read as a file (chmod would not stop root)
    with pytest.raises(InvalidInput, match="cannot read the secret key file") as info:
        load_settings(env={"QUIRKSCOPE_HOME": str(tmp_path)})
    assert info.value.field == "QUIRKSCOPE_SECRET_KEY"


def test_empty_secret_key_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("  \n")
    with pytest.raises(InvalidInput, match="is empty"):
        load_settings(env={"QUIRKSCOPE_HOME": str(tmp_path)})


def test_secret_key_from_the_environment_wins(tmp_path: Path) -> None:
    settings = load_settings(env={"QUIRKSCOPE_HOME": str(tmp_path), "QUIRKSCOPE_SECRET_KEY": "k"})
    assert settings.secret_key == "k"
    assert not (tmp_path / "secret_key").exists()


def _template_secrets() -> dict[str, str]:
    import yaml
    docs = yaml.safe_load_all((Path(__file__).parents[1] / "deploy/k8s/quirkscope.yaml").read_text())
    secret = next(d for d in docs if d and d.get("kind") == "Secret")
    return {k: str(v) for k, v in secret["stringData"].items()}


def test_every_placeholder_secret_of_the_k8s_template_is_refused_by_name(tmp_path: Path) -> None:
    template = _template_secrets()
    placeholders = [name for name, value in template.items() if "CHANGE_ME" in value]
    assert len(placeholders) >= 5
    real = {name: value.replace("CHANGE_ME_TO_A_LONG_RANDOM_STRING", "s3cr3t")
                       .replace("CHANGE_ME_TO_ANOTHER_LONG_RANDOM_STRING", "t0ken").replace("CHANGE_ME", "pw")
            for name, value in template.items()}
    env = {"QUIRKSCOPE_HOME": str(tmp_path), **real}
    assert load_settings(env=env).metrics_token == "t0ken"      # every secret set: the service starts
    for name in placeholders:
        with pytest.raises(InvalidInput, match="CHANGE_ME placeholder") as info:
            load_settings(env={**env, name: template[name]})
        assert info.value.field == name
