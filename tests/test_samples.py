"""The configurations operators copy from stay valid: the production sample and the
examples in docs/configuration.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from syncd.columns.types import COLUMN_TYPES
from syncd.config.loader import load_config

ROOT = Path(__file__).resolve().parent.parent
SECRETS = ("db-password", "ingest-api-key", "source-api-key")


@pytest.fixture
def credentials(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "credentials"
    folder.mkdir()
    for name in SECRETS:
        (folder / name).write_text(f"not-a-real-{name}\n")
    return {"CREDENTIALS_DIRECTORY": str(folder)}


def test_the_production_sample_is_valid_with_its_credentials(credentials: dict[str, str]) -> None:
    config = load_config(ROOT / "etc" / "syncd.yaml", credentials)
    assert list(config.entities) == ["task", "inspection", "user", "entity"]
    assert config.entities["task"].preload.enabled
    assert config.entities["user"].schedule.at


def test_every_yaml_example_in_the_configuration_docs_is_valid(
    tmp_path: Path, credentials: dict[str, str]
) -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    examples = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert examples
    for number, example in enumerate(examples):
        path = tmp_path / f"example-{number}.yaml"
        path.write_text(example)
        load_config(path, credentials)


def test_the_configuration_docs_list_every_column_type_in_the_registry() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    listed = re.search(r"Column types: (.*?)\.\n", text, re.S)
    assert listed is not None
    names = tuple(re.findall(r"`([a-z ]+)`", listed[1]))
    assert names == COLUMN_TYPES
