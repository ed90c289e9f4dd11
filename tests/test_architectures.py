"""The registry of architectures is the one list: docs/models.md, modeling/, the tiny models and presets follow it."""
import re

import pytest
from conftest import ROOT

from pim.models.architectures import (
    ARCHITECTURES,
    CONVERSION,
    HOOKS,
    PATCH,
    alias_table,
    aliases,
    by_type,
    markdown_table,
    recorded_by,
)
from pim.models.names import NotConverted, resolve_model

MODELS_PAGE = (ROOT / "docs" / "models.md").read_text()  # the tables users read


def test_the_models_page_tables_are_the_registry():
    assert markdown_table() in MODELS_PAGE, "docs/models.md's architecture table: paste pim.models.architectures.markdown_table()"
    assert alias_table() in MODELS_PAGE, "docs/models.md's alias table: paste pim.models.architectures.alias_table()"


def modeling_file(model_type):
    name = "gemma3" if model_type.startswith("gemma3") else model_type
    return ROOT / "modeling" / f"modeling_{name}.py"


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a.recorded_by == PATCH], ids=lambda a: a.model_type)
def test_every_patched_type_has_a_marked_modeling_file_and_presets(arch):
    text = modeling_file(arch.model_type).read_text()
    assert "record_activation = None  # activation-recorder" in text
    assert "activation_recorder.end_step(" in text
    assert arch.tiny is not None or arch.model_type == "gemma3"
    if arch.bench:
        assert set(arch.bench) == {"tiny", "cpu-small", "7b"}


def test_unknown_types_are_hooked_and_conversions_name_their_target():
    assert recorded_by("some_new_model") == HOOKS
    for arch in ARCHITECTURES:
        assert (arch.recorded_by == CONVERSION) == (arch.converted_to is not None)
        if arch.converted_to:
            assert by_type(arch.converted_to).recorded_by == PATCH


def test_aliases_are_unique_and_well_formed():
    hubs = [hub for hub, _, _ in aliases().values()]
    assert len(hubs) == len(set(hubs))
    assert sum(len(a.aliases) for a in ARCHITECTURES) == len(aliases()), "an alias is defined twice"
    for alias, (hub, _, _) in aliases().items():
        assert re.fullmatch(r"[a-z0-9.-]+", alias) and re.fullmatch(r"[\w.-]+/[\w.-]+", hub), alias


def test_a_qwen1_alias_without_its_converted_folder_says_how_to_convert(tmp_path):
    with pytest.raises(NotConverted, match=r"qwen-7b is Qwen/Qwen-7B.*make convert-qwen1 SRC=\S+ NAME=qwen-7b"):
        resolve_model("qwen-7b", tmp_path)
    (tmp_path / "qwen-7b-chat").mkdir()
    assert resolve_model("qwen-7b-chat", tmp_path)[::2] == (str(tmp_path / "qwen-7b-chat"), "chatml")
