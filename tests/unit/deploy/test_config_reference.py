"""The README's configuration reference is what the settings classes say."""

from yigongti_deploy import config_reference
from yigongti_kit.settings import KitSettings


def test_the_readme_reference_is_generated_from_the_settings():
    readme = config_reference.README.read_text(encoding="utf-8")
    assert config_reference.updated(readme) == readme, "run `make schemas`"


def test_every_setting_has_a_row_and_a_meaning():
    text = config_reference.render()
    for name, field in KitSettings.model_fields.items():
        assert f"| `{name.upper()}` |" in text
        assert field.description, f"{name} has no description"
    for settings in config_reference.SERVICE_SETTINGS.values():
        for name, field in settings.model_fields.items():
            assert f"| `{name.upper()}` |" in text and field.description, name
